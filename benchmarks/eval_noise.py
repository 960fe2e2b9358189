"""How much of a checkpoint's M=1 error is location noise? Evaluate it at other policy stds.

    python benchmarks/eval_noise.py [--ckpt FILE ...] [--stds 0.05 0.01] [--seeds 1 2 3]
                                    [--split test|valid]

For each checkpoint (default: every ckpt/pretrained/*_model_best.pdparams), the error on its own
dataset's test set (or, with --split valid, on the validation set it was trained against:
the place to choose config.EVAL_STD), mean and range over the seeds, with M = 1 and M = 10,
at the std testing the file uses and at each of --stds (the policy's mean fixations
unchanged, only the noise around them scaled). If smaller stds close most of the gap between
M = 1 and M = 10, the error is noise around good fixations; if they do not, M = 10's gain is
the ensemble of ten different trajectories (the first fixation is uniformly random too), and
only a better model closes it. Prints a Markdown table.
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import tune_cpu_env  # noqa: E402

tune_cpu_env()  # before Paddle loads, exactly as main.py

import data_loader  # noqa: E402
from checkpoint import load_model  # noqa: E402
from data_loader import validation_loader  # noqa: E402
from model import error_rate  # noqa: E402
from utils import one_line_errors  # noqa: E402


@one_line_errors()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=None,
                   help="checkpoint files (default: ckpt/pretrained/*_model_best.pdparams)")
    p.add_argument("--stds", type=float, nargs="+", default=[0.05, 0.01],
                   help="policy stds to evaluate at, besides the checkpoint's own")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="valid: the held-out part of the training set the checkpoint was "
                        "validated on (the place to choose a std; test only reports)")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--batch_size", type=int, default=1000)
    args = p.parse_args(argv)
    if min(args.stds) <= 0:
        p.error("--stds must all be > 0: a Gaussian policy's log-probability needs std > 0")
    files = args.ckpt or sorted(glob.glob(os.path.join(ROOT, "ckpt", "pretrained", "*_model_best.pdparams")))
    print(f"{args.split} error (%) at each policy std, mean (min-max) over seeds {args.seeds}\n")
    print("| checkpoint | std | M=1 | M=10 |\n| --- | --: | --: | --: |")
    for path in files:
        model, config = load_model(path)
        own = config.eval_std
        if args.split == "test":
            loader = data_loader.get_test_loader(args.data_dir, args.batch_size,
                                                 config.dataset, config.canvas, config.clutter)
        else:
            loader = validation_loader(config, args.data_dir, args.batch_size)
        for std in [own] + [s for s in args.stds if s != own]:
            cells = []
            for M in (1, 10):
                errs = [error_rate(model, loader, config.num_glimpses, M, s, std)
                        for s in args.seeds]
                cells.append(f"{sum(errs) / len(errs):.2f} ({min(errs):.2f}-{max(errs):.2f})")
            own_mark = " (saved)" if std == own else ""
            print(f"| {os.path.basename(path)} | {std:g}{own_mark} | " + " | ".join(cells)
                  + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
