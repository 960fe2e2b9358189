"""Entry point: python main.py [--flags]; see `python main.py --help`.

Exit status: 0 done, 2 bad input (one `error:` line), 130 / 143 training stopped by Ctrl-C /
SIGTERM (its state saved: the last line says how to resume).
"""
import sys
import time

from utils import one_line_errors, select_device, set_seed, tune_cpu_env


@one_line_errors()
def main(argv=None):
    tune_cpu_env()  # before Paddle loads: MKL reads its environment once
    import checkpoint
    import data_loader
    from config import get_config, notes, resumed_config, tested_config
    from plot_glimpses import plot_curves
    from trainer import Trainer
    from utils import ARCH_KEYS, model_name

    config, given = get_config(argv)
    state = file = None
    said = []
    if config.resume or not config.is_train:
        # Testing loads the run's best checkpoint, resuming its latest, unless --best says.
        best = config.best if config.best is not None else not config.is_train
        file = config.ckpt or checkpoint.find(config.ckpt_dir, model_name(config), best,
                                              any_model=not given & set(ARCH_KEYS))
        state = checkpoint.load(file)
        stored = checkpoint.stored_config(state)
        if not state.get("config"):
            said.append(f"[!] {file} stores no config (reference format): read with the reference "
                        "implementation's hyperparameters " + " ".join(
                            f"{k}={stored[k]}" for k in ("patch_size", "num_patches",
                                                         "glimpse_scale", "num_glimpses", "std")))
        if config.is_train:
            config, resumed = resumed_config(config, given, stored)
            said += resumed
        else:
            config = tested_config(config, given, stored, checkpoint.eval_std(state))
    if config.export:
        return export(file, config.export)
    device = select_device(config.use_gpu)
    set_seed(config.random_seed)
    trainer = Trainer(config, device, state, file, restart_lr=config.resume and "init_lr" in given,
                      default_std="eval_std" not in given, notes=said + notes(config),
                      plot_curves=plot_curves)
    if not config.is_train:
        trainer.test(data_loader.get_test_loader(
            config.data_dir, config.batch_size, config.dataset, config.canvas, config.clutter))
        return 0
    train, valid = data_loader.get_train_valid_loader(
        config.data_dir, config.batch_size, config.random_seed, config.valid_size,
        dataset=config.dataset, canvas=config.canvas, clutter=config.clutter)
    stopped_by = trainer.train(train, valid)
    return 128 + stopped_by if stopped_by else 0


def export(ckpt, out_dir):
    from export import export as write
    select_device(False)
    tic = time.time()
    for path, size in write(ckpt, out_dir):
        print(f"[*] wrote {path} ({size / 1024:.0f} KiB)")
    print(f"[*] exported {ckpt} in {time.time() - tic:.1f}s; run it with paddle.inference "
          f"or python plot_glimpses.py --inference_dir {out_dir} --image FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
