"""How much of a checkpoint's M=1 test error is location noise? Test it with smaller stds.

    python benchmarks/eval_noise.py [--ckpt FILE ...] [--stds 0.05 0.01] [--seeds 1 2 3]

For each checkpoint (default: every ckpt/*_model_best.pdparams), the test error of its own
dataset, mean over the seeds, with M = 1 at the std it was saved with, at each of --stds
(the policy's mean fixations unchanged, only their noise scaled down), and with M = 10 at its
own std. If the smaller stds close most of the gap between M = 1 and M = 10, the error is
noise around good fixations and a lower std late in training (--std_factor) pays; if they do
not, M = 10's gain is the ensemble of ten different trajectories (the first fixation is
uniformly random too), and only a better model closes it. Prints a Markdown table.
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import tune_cpu_env  # noqa: E402

tune_cpu_env()  # before Paddle loads, exactly as main.py

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="No ccache found")

import paddle  # noqa: E402

import data_loader  # noqa: E402
from trainer import load_model, rollout_loss  # noqa: E402
from utils import RamError, set_seed  # noqa: E402


@paddle.no_grad()
def test_error(model, config, loader, seed, M):
    """Test error (%) with M samples per image; `seed` seeds the location noise."""
    set_seed(seed)
    correct = paddle.zeros([])
    for x, y in loader:
        correct += rollout_loss(model, x, y, config.num_glimpses, M).correct
    return 100.0 - 100.0 * float(correct) / loader.num_samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=None,
                   help="checkpoint files (default: ckpt/*_model_best.pdparams)")
    p.add_argument("--stds", type=float, nargs="+", default=[0.05, 0.01],
                   help="policy stds to test at, besides the checkpoint's own")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--batch_size", type=int, default=1000)
    args = p.parse_args(argv)
    files = args.ckpt or sorted(glob.glob(os.path.join(ROOT, "ckpt", "*_model_best.pdparams")))
    print(f"M=1 test error (%) at each std, mean over seeds {args.seeds}; M=10 at the own std\n")
    print("| checkpoint | own std | M=1, own std | " + " | ".join(
        f"M=1, std {s:g}" for s in args.stds) + " | M=10, own std |")
    print("| --- | --: | --: | " + " | ".join("--:" for _ in args.stds) + " | --: |")
    try:
        for path in files:
            model, config = load_model(path)
            own = model.locator.std
            loader = data_loader.get_test_loader(args.data_dir, args.batch_size, config.dataset,
                                                 config.canvas, config.clutter)
            cells = []
            for std, M in [(own, 1)] + [(s, 1) for s in args.stds] + [(own, 10)]:
                model.locator.std = std
                errs = [test_error(model, config, loader, s, M) for s in args.seeds]
                cells.append(f"{sum(errs) / len(errs):.2f}")
            print(f"| {os.path.basename(path)} | {own:.3g} | " + " | ".join(cells) + " |",
                  flush=True)
    except RamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
