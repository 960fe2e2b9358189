"""Entry point: python main.py [--flags]; see `python main.py --help`."""
import sys
import time

from utils import RamError, one_line_errors, select_device, set_seed, tune_cpu_env

tune_cpu_env()  # before anything imports Paddle: MKL reads its environment once, at load

import data_loader  # noqa: E402  (after tune_cpu_env on purpose)
from config import check_config, get_config  # noqa: E402
from plot_glimpses import plot_curves  # noqa: E402
from trainer import Trainer, export_inference  # noqa: E402


@one_line_errors()
def main(argv=None):
    config = get_config(argv)
    notes = check_config(config)
    if config.export:
        return export(config)
    device = select_device(config.device, config.use_gpu)
    set_seed(config.random_seed)
    trainer = Trainer(config, device, plot_curves)  # joins the process group when launched distributed
    for note in notes:
        trainer.logger.info(note)
    if config.is_train:
        train, valid = data_loader.get_train_valid_loader(
            config.data_dir, config.batch_size, config.random_seed, config.valid_size,
            config.shuffle, config.show_sample and trainer.is_main, config.plot_dir,
            config.dataset, config.canvas, config.clutter, config.shift)
        trainer.train(train, valid)
    else:
        trainer.test(data_loader.get_test_loader(
            config.data_dir, config.batch_size, config.dataset, config.canvas, config.clutter))
    return 0


def export(config):
    if not config.ckpt:
        raise RamError("--export needs the checkpoint to export: --ckpt FILE")
    select_device("cpu")
    tic = time.time()
    for path, size in export_inference(config.ckpt, config.export):
        print(f"[*] wrote {path} ({size / 1024:.0f} KiB)")
    print(f"[*] exported {config.ckpt} in {time.time() - tic:.1f}s; run it with paddle.inference "
          f"or python plot_glimpses.py --inference_dir {config.export} --image FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
