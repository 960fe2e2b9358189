"""Entry point: python main.py [--flags]; see `python main.py --help`."""
import sys
import warnings

# Paddle warns about a missing C++ build cache on import; it concerns custom ops, not us.
warnings.filterwarnings("ignore", message="No ccache found")

import data_loader
from config import check_config, get_config
from trainer import Trainer
from utils import RamError, configure_threads, select_device, set_seed


def main(argv=None):
    config = get_config(argv)
    try:
        warnings = check_config(config)
        threads = configure_threads()
        device = select_device(config.device, config.use_gpu)
        set_seed(config.random_seed)
        trainer = Trainer(config, device)
        trainer.logger.info(f"[*] Device: {device}" + (f" ({threads} MKL threads)" if device == "cpu" else ""))
        for w in warnings:
            trainer.logger.info(w)
        if config.is_train:
            train, valid = data_loader.get_train_valid_loader(
                config.data_dir, config.batch_size, config.random_seed, config.valid_size,
                config.shuffle, config.show_sample, config.plot_dir)
            trainer.train(train, valid)
        else:
            trainer.test(data_loader.get_test_loader(config.data_dir, config.batch_size))
    except RamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
