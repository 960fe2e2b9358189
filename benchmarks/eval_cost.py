"""Evaluation cost per image on 28x28, 60x60 and 100x100 inputs: RAM against a dense layer.

    python benchmarks/eval_cost.py [--images 2000] [--batch_size 1000] [--repeats 5]

The paper's claim: RAM's cost depends on the glimpses, not on the image, so evaluation time
per image stays nearly flat from 28x28 MNIST to 100x100 cluttered MNIST. Timed here:

  data   building the batches with data_loader.make_loader over real MNIST test images, as the
         test set is built (fixed TEST_SEED): mnist 28x28, translated 60x60, cluttered 100x100
         (8 pieces). The canvases are composed by the loader, so this part grows with H*W.
  model  model.rollout_loss under paddle.no_grad with the model in eval mode, M = 1: exactly
         what Trainer.evaluate runs per batch (6 glimpses, random initial weights: the cost
         does not depend on their values).
  dense  for contrast, one Linear(H*W -> 256) on the flattened image, a layer that touches
         every pixel, on the same batches.

Two glimpse networks: the MNIST reference (8x8, 1 scale) on 28x28 only, and 12x12 patches
with 3 scales (scale 2) on all three sizes, the like-for-like comparison. Every repeat runs
all rows batch by batch in turn, so a load spike on a shared machine hits all rows alike;
the median over all timed batches is printed, in ms per 1000 images, as a Markdown table.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import tune_cpu_env  # noqa: E402

MKL_THREADS = tune_cpu_env()  # before Paddle loads, exactly as main.py

import paddle  # noqa: E402

import data_loader  # noqa: E402
from config import get_config  # noqa: E402
from model import build_model, rollout_loss  # noqa: E402
from utils import select_device, set_seed  # noqa: E402

GLIMPSES = 6
REFERENCE = ("8x8, 1 scale", ["--patch_size", "8", "--num_patches", "1", "--glimpse_scale", "1"])
MULTI = ("12x12, 3 scales", ["--patch_size", "12", "--num_patches", "3", "--glimpse_scale", "2"])
# (glimpse network, dataset, canvas)
ROWS = [(REFERENCE, "mnist", 28), (MULTI, "mnist", 28), (MULTI, "translated", 60),
        (MULTI, "cluttered", 100)]


class Row:
    def __init__(self, glimpse, dataset, canvas, images, labels, batch_size):
        (self.glimpse, flags), self.dataset = glimpse, dataset
        self.config, _ = get_config(flags + ["--num_glimpses", str(GLIMPSES), "--dataset",
                                             dataset, "--canvas", str(canvas), "--is_train",
                                             "False"])  # settles canvas (28 for mnist), clutter
        self.canvas, self.clutter = self.config.canvas, self.config.clutter
        self.loader = data_loader.make_loader(images, labels, batch_size, dataset, self.canvas,
                                              self.clutter, fixed_seed=data_loader.TEST_SEED)
        self.model = build_model(self.config)
        self.model.eval()
        self.dense = paddle.nn.Linear(self.canvas * self.canvas, 256)
        self.times = {"data": [], "model": [], "dense": []}

    def label(self):
        data = self.dataset + (f" ({self.clutter} pieces)" if self.clutter else "")
        return f"{self.canvas}x{self.canvas}", data, f"{GLIMPSES} x {self.glimpse}"

    @paddle.no_grad()
    def run_batch(self, batches, sync):
        """Time one batch: making it (data), RAM on it (model), the dense layer on it."""
        tic = time.perf_counter()
        x, y = next(batches)
        sync()
        toc = time.perf_counter()
        c = self.config
        ep = rollout_loss(self.model, x, y, c.num_glimpses, 1, c.reinforce_weight)
        ep.loss.item()                                 # waits for the device
        tac = time.perf_counter()
        self.dense(x.reshape([x.shape[0], -1]))
        sync()
        end = time.perf_counter()
        per_1000 = 1000.0 / x.shape[0]
        for part, t in (("data", toc - tic), ("model", tac - toc), ("dense", end - tac)):
            self.times[part].append(t * per_1000)

    def ms(self, part):
        """Median ms per 1000 images of one part ('data', 'model', 'dense' or 'both')."""
        if part == "both":
            t = [d + m for d, m in zip(self.times["data"], self.times["model"])]
        else:
            t = self.times[part]
        return 1000.0 * statistics.median(t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="# MNIST test images per pass")
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    args = p.parse_args()

    device = select_device()
    set_seed(1)
    images, labels = data_loader.load_mnist(args.data_dir, "test")
    images, labels = images[:args.images], labels[:args.images]
    rows = [Row(g, d, c, images, labels, args.batch_size) for g, d, c in ROWS]
    sync = paddle.device.synchronize if device == "gpu" else (lambda: None)
    for repeat in range(args.repeats + 1):             # pass 0 warms up (kernels, allocator)
        passes = [iter(row.loader) for row in rows]
        for _ in range(len(rows[0].loader)):          # batch by batch, every row in turn:
            for row, batches in zip(rows, passes):     # load spikes hit all rows alike
                row.run_batch(batches, sync)
        if repeat == 0:
            for row in rows:
                row.times = {k: [] for k in row.times}

    print(f"device {device}, MKL threads {MKL_THREADS}, batch {args.batch_size}, "
          f"{len(labels)} MNIST test images x {args.repeats} passes, median over "
          "batches, ms per 1000 images")
    print("| input | dataset | glimpses | data | RAM model | RAM data+model "
          "| dense H*W->256 |")
    print("|---|---|---|--:|--:|--:|--:|")
    for row in rows:
        size, data, glimpse = row.label()
        print(f"| {size} | {data} | {glimpse} | {row.ms('data'):.1f} | {row.ms('model'):.1f} "
              f"| {row.ms('both'):.1f} | {row.ms('dense'):.1f} |")
    small = next(r for r in rows if r.glimpse == MULTI[0] and r.canvas == 28)
    large = next(r for r in rows if r.glimpse == MULTI[0] and r.canvas == 100)

    def ratio(part):
        return large.ms(part) / small.ms(part)

    print(f"100x100 / 28x28 ({GLIMPSES} x {MULTI[0]}): RAM model {ratio('model'):.2f}x, "
          f"RAM data+model {ratio('both'):.2f}x, dense {ratio('dense'):.1f}x "
          f"(pixels {100 * 100 / 28 ** 2:.1f}x)")


if __name__ == "__main__":
    main()
