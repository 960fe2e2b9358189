"""Time to accuracy as testing measures it: when did a training run first reach a validation
error at or under a target, with one fixation sample per image at the test-time std?

    python benchmarks/time_to_accuracy.py [--ckpt_dir ckpt] [--name ram_6_8x8_1]
                                          [--log logs/ram_6_8x8_1.log] [--target_err 1.12]
                                          [--passes 5] [--eval_std S]

The error in the training log is measured at the training std: it drives the lr schedule and
picks the best checkpoint. Testing with M = 1 samples at the checkpoint's --eval_std instead,
where the same weights err less. This evaluates every epoch checkpoint the run saved (one per
--save_freq epochs) on its own validation split at that std, as the mean of --passes passes
(seeds 1..passes), prints each beside the wall time the log gives for that epoch, and ends
with the first epoch at or under --target_err (so the answer is exact to --save_freq epochs).
"""
import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import tune_cpu_env  # noqa: E402

tune_cpu_env()  # before Paddle loads, exactly as main.py

from checkpoint import load_model  # noqa: E402
from data_loader import validation_loader  # noqa: E402
from model import error_rate  # noqa: E402
from utils import RamError, one_line_errors  # noqa: E402


def log_minutes(path):
    """{epoch: the log's running total in minutes}; a resumed run's later lines win."""
    minutes = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"epoch (\d+)/\d+ .*total ([\d.]+) min", line)
            if m:
                minutes[int(m.group(1))] = float(m.group(2))
    return minutes


@one_line_errors()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "ckpt"))
    p.add_argument("--name", default="ram_6_8x8_1", help="the run's model name")
    p.add_argument("--log", default=None, help="its training log (default: logs/<name>.log)")
    p.add_argument("--target_err", type=float, default=1.12)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--eval_std", type=float, default=None,
                   help="evaluate at this std instead of each checkpoint's eval std (e.g. "
                        "0.02 for runs whose checkpoints predate --eval_std and so store none)")
    args = p.parse_args(argv)
    if args.passes < 1:
        p.error("--passes must be >= 1")
    if args.eval_std is not None and args.eval_std <= 0:
        p.error("--eval_std must be > 0")
    log = args.log or os.path.join(ROOT, "logs", args.name + ".log")
    files = glob.glob(os.path.join(args.ckpt_dir, args.name + "_ckpt*.pdparams"))
    epochs = sorted(int(re.search(r"_ckpt(\d+)\.pdparams$", f).group(1)) for f in files)
    if not epochs:
        raise RamError(f"no epoch checkpoints {args.name}_ckpt<N>.pdparams in "
                       f"{args.ckpt_dir}; point --ckpt_dir at a training run's ckpt/")
    if not os.path.exists(log):
        raise RamError(f"no training log {log}; pass the run's log with --log")
    minutes = log_minutes(log)
    loader = None
    print(f"validation error (%) at M = 1, mean of {args.passes} passes, per epoch "
          f"checkpoint of {args.name}\n")
    print("| epoch | std | valid error | wall time (log) |\n| --: | --: | --: | --: |")
    first = None
    for epoch in epochs:
        path = os.path.join(args.ckpt_dir, f"{args.name}_ckpt{epoch}.pdparams")
        model, config = load_model(path)
        if loader is None:  # the run's own split
            loader = validation_loader(config, args.data_dir, args.batch_size)
        std = config.eval_std if args.eval_std is None else args.eval_std
        err = sum(error_rate(model, loader, config.num_glimpses, seed=s, std=std)  # seeds 1..
                  for s in range(1, args.passes + 1)) / args.passes
        wall = f"{minutes[epoch]:.1f} min" if epoch in minutes else "?"
        print(f"| {epoch} | {std:g} | {err:.2f} | {wall} |", flush=True)
        if first is None and round(err, 2) <= args.target_err:  # as printed, as logs
            first = (epoch, wall)
    if first:
        print(f"\nfirst at or under {args.target_err}%: epoch {first[0]}, {first[1]}")
    else:
        print(f"\nnever at or under {args.target_err}% in these checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
