"""Gradient norms of a run's training step: does `--clip_grad` act, and on which part?

    python benchmarks/grad_norms.py --ckpt FILE [--batches 30] [--fresh] [--data_dir ./data]

Runs the checkpoint's own training episode and loss (trainer.EpisodeLayer with its stored
--reinforce_core, --reinforce_weight, --rollouts and --batch_size) on `--batches` training
batches without updating the weights, and reports the L2 norm of the gradient of the location
network, of everything else, and of all of it (what ClipGradByGlobalNorm compares with
--clip_grad): median, 90th percentile, maximum, and the share of steps above the clip.
`--fresh`: the same architecture and objective at its initial weights (a run's first steps).
Separate clipping of the location network (as slundqui/tfRAM does) can only matter where a
norm passes the clip.
"""
import argparse
import itertools
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import RamError, one_line_errors, tune_cpu_env  # noqa: E402


def norms(model, batches, config):
    """[batches, 3] gradient L2 norms (location network, the rest, all) of training steps."""
    import paddle
    from trainer import EpisodeLayer
    episode = EpisodeLayer(model, config)   # the episode and loss training runs
    rows = []
    for x, y in batches:
        episode(x, y).loss.backward()
        sq = {"locator": 0.0, "rest": 0.0}
        for name, p in model.named_parameters():
            if p.grad is not None:
                part = "locator" if name.startswith("locator.") else "rest"
                sq[part] += float(paddle.sum(p.grad * p.grad))
        model.clear_gradients()
        rows.append([np.sqrt(sq["locator"]), np.sqrt(sq["rest"]),
                     np.sqrt(sq["locator"] + sq["rest"])])
    return np.array(rows)


@one_line_errors(RamError, FileNotFoundError)
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a training checkpoint (stores its flags)")
    p.add_argument("--batches", type=int, default=30, help="training batches to measure")
    p.add_argument("--fresh", action="store_true",
                   help="initial weights instead of the checkpoint's (same flags)")
    p.add_argument("--data_dir", default="./data")
    p.add_argument("--seed", type=int, default=1, help="batches and location noise")
    args = p.parse_args(argv)
    tune_cpu_env()
    import paddle
    import checkpoint
    from data_loader import get_train_valid_loader
    from model import build_model
    from utils import set_seed
    state = checkpoint.load(args.ckpt)
    config = argparse.Namespace(**{"rollouts": 1, **checkpoint.stored_config(state)})
    set_seed(args.seed)
    model = build_model(config)
    if not args.fresh:
        checkpoint.load_weights(model, state, args.ckpt)
    model.train()
    train, _ = get_train_valid_loader(args.data_dir, config.batch_size, args.seed,
                                      config.valid_size, config.dataset, config.canvas,
                                      config.clutter)
    r = norms(model, itertools.islice(train.iterate(0), args.batches), config)
    clip = config.clip_grad or float("inf")
    print(f"{args.ckpt}{' (initial weights)' if args.fresh else ''}: "
          f"--reinforce_core {config.reinforce_core} --reinforce_weight {config.reinforce_weight}"
          f" --rollouts {config.rollouts} --batch_size {config.batch_size} --clip_grad "
          f"{config.clip_grad}; {len(r)} steps, paddle {paddle.__version__}")
    for k, part in enumerate(["location network", "the rest", "all (what is clipped)"]):
        print(f"  {part:22s} median {np.median(r[:, k]):7.3f}  p90 "
              f"{np.percentile(r[:, k], 90):7.3f}  max {r[:, k].max():7.3f}  "
              f"above the clip: {np.mean(r[:, k] > clip) * 100:.0f}% of steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
