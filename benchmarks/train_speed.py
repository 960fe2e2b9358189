"""Training throughput of the real step (Trainer.train_step, what `python main.py` runs) and the
GEMM floor of this machine for the same shapes.

    python benchmarks/train_speed.py [--batch_sizes 128 256] [--windows 7] [--steps 20]
                                     [--parts] [--profile]

For each batch size: warm up, then time `--windows` windows of `--steps` steps on MNIST
batches and report the median samples/s. After each window, time Paddle's matmul alone on
every GEMM one training step performs (forward, weight gradient, input gradient): the implied
floor is FLOPs per sample / matmul rate, and the step's distance from it is the median of the
windows' ratios, each window beside its own floor. `--parts` splits the real step's time into the
episode's forward pass, its backward pass and the optimiser, each beside its share of the
floor. `--profile` adds Paddle's operator table for `--steps` steps (forward ops and their
*GradNode backward), to see where the rest goes. The last line is `samples/s: N` for batch
128.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import tune_cpu_env  # noqa: E402

MKL_THREADS = tune_cpu_env()  # before Paddle loads, exactly as main.py

import paddle  # noqa: E402

import data_loader  # noqa: E402
from config import get_config  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import select_device, set_seed  # noqa: E402


def gemms(config):
    """Every (m-independent) GEMM of one training step per image, as (k, n, count, kind).

    A Linear(in, out) costs 2*in*out FLOPs per image forward, the same again for its weight
    gradient, and again for its input gradient when its input needs one. fc1/fc2 read the
    retina and the location (no gradient), locator.fc and baseliner read a detached h_t.
    """
    c = config
    hg, hl, hid = c.glimpse_hidden, c.loc_hidden, c.hidden_size
    phi = c.num_patches * c.patch_size ** 2
    per_glimpse = [  # (in, out, input needs a gradient)
        (phi, hg, False), (2, hl, False), (hg, hg + hl, True), (hl, hg + hl, True),
        (hg + hl, hid, True), (hid, hid, True), (hid, hid // 2, False), (hid // 2, 2, True),
        (hid, 1, False)]
    out = []
    for fan_in, fan_out, input_grad in per_glimpse:
        out.append((fan_in, fan_out, c.num_glimpses, input_grad))
    out.append((hid, 10, 1, True))  # classifier, last glimpse only
    return out


class GemmFloor:
    """Paddle's matmul alone on every GEMM of one training step (gemms), on operands made
    once, back to back: the floor a step of `batch` images could reach on this machine."""

    def __init__(self, config, batch):
        self.batch, self.flops, self.ops = batch, 0.0, []
        for fan_in, fan_out, count, input_grad in gemms(config):
            a = paddle.randn([batch, fan_in])
            w = paddle.randn([fan_in, fan_out])
            g = paddle.randn([batch, fan_out])
            self.ops += [("forward", count, partial(paddle.matmul, a, w)),
                         ("backward", count, partial(paddle.matmul, a, g, transpose_x=True))]
            if input_grad:
                self.ops.append(("backward", count, partial(paddle.matmul, g, w,
                                                            transpose_y=True)))
            self.flops += count * 2.0 * fan_in * fan_out * (3 if input_grad else 2)

    def time(self, repeats=50):
        """(seconds per image, {"forward"/"backward": seconds per image}), timed now."""
        phases = {"forward": 0.0, "backward": 0.0}
        for phase, count, op in self.ops:
            for _ in range(5):
                op()
            tic = time.perf_counter()
            for _ in range(repeats):
                op()
            phases[phase] += count * (time.perf_counter() - tic) / repeats / self.batch
        return sum(phases.values()), phases


def phase_times(trainer, loader, windows, steps):
    """Median seconds per step of the real step's phases over `windows` windows of `steps`
    steps: the episode's forward (trainer.net) and the optimiser update are clocked by
    wrapping them; the backward pass (with clear_grad) is the rest of Trainer.train_step."""
    clocks = {}

    def clocked(name, fn):
        def run(*args, **kwargs):
            tic = time.perf_counter()
            out = fn(*args, **kwargs)
            clocks[name] += time.perf_counter() - tic
            return out
        return run

    net, optimizer = trainer.net, trainer.optimizer
    net.forward = clocked("forward", net.forward)            # instance attributes shadow
    optimizer.step = clocked("optimizer", optimizer.step)    # the methods, until deleted
    try:
        trainer.model.train()
        data = [batch for batch, _ in zip(loader, range(steps))]
        per_window = []
        for _ in range(windows + 1):  # the first is warm-up
            clocks.update(forward=0.0, optimizer=0.0)
            tic = time.perf_counter()
            for x, y in data:
                ep = trainer.train_step(x, y)
            ep.loss.item()
            total = time.perf_counter() - tic
            per_window.append({"forward": clocks["forward"] / len(data),
                               "optimizer": clocks["optimizer"] / len(data),
                               "backward": (total - clocks["forward"] - clocks["optimizer"])
                               / len(data)})
    finally:
        del net.forward, optimizer.step
    return {k: statistics.median(w[k] for w in per_window[1:]) for k in per_window[0]}


def throughput(trainer, loader, windows, steps, floor):
    """Median samples/s of Trainer.train_step (as main.py runs it) over `windows` timed
    windows of `steps` training steps, and the GEMM floor (GemmFloor.time) timed right after
    each window: this shared machine's speed drifts by tens of percent within minutes, so a
    floor timed once can come from a faster or slower moment than the step it is compared
    with. Returns (median rate, [rate per window], [(floor seconds per image, phases)])."""
    trainer.model.train()
    batches = iter(loader)

    def batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    for _ in range(steps):  # warm-up
        trainer.train_step(*batch())
    rates, floors = [], []
    for _ in range(windows):
        data = [batch() for _ in range(steps)]
        tic = time.perf_counter()
        for x, y in data:
            ep = trainer.train_step(x, y)
        ep.loss.item()  # wait for the device before stopping the clock
        rates.append(sum(x.shape[0] for x, _ in data) / (time.perf_counter() - tic))
        floors.append(floor.time())
    return statistics.median(rates), rates, floors


def profile(trainer, loader, steps):
    """Print Paddle's per-operator CPU time table for `steps` training steps."""
    import paddle.profiler as profiler
    data = [b for _, b in zip(range(steps), loader)]
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=lambda _: None)  # the table only, no trace file
    prof.start()
    for x, y in data:
        ep = trainer.train_step(x, y)
    ep.loss.item()
    prof.stop()
    prof.summary(op_detail=False, views=profiler.SummaryView.OperatorView, time_unit="ms")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=None,
                   help="batch sizes to time (default: 128 and the config default)")
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--parts", action="store_true",
                   help="also time the real step's forward, backward and optimiser apart, "
                        "each beside its share of the GEMM floor")
    p.add_argument("--profile", action="store_true",
                   help="also print the per-operator time table of --steps steps")
    args = p.parse_args()

    default, _ = get_config([])
    sizes = args.batch_sizes or sorted({128, default.batch_size})
    device = select_device()
    print(f"device {device}, MKL threads {MKL_THREADS}, "
          f"MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE', '-')}")
    results = {}
    scratch = tempfile.mkdtemp(prefix="ram_bench_")
    for bs in sizes:
        config, _ = get_config(["--batch_size", str(bs), "--data_dir", args.data_dir,
                                "--logs_dir", scratch, "--ckpt_dir", scratch])
        set_seed(config.random_seed)
        trainer = Trainer(config, device)
        train, _ = data_loader.get_train_valid_loader(config.data_dir, bs, config.random_seed)
        floor = GemmFloor(config, bs)
        rate, rates, floors = throughput(trainer, train, args.windows, args.steps, floor)
        if args.profile:
            profile(trainer, train, args.steps)
        floor_s = statistics.median(f for f, _ in floors)
        floor_phases = {k: statistics.median(p[k] for _, p in floors) for k in floors[0][1]}
        slower = sorted(1 / (r * f) for r, (f, _) in zip(rates, floors))  # per window
        results[bs] = rate
        print(f"batch {bs}: {rate:,.0f} samples/s (median; windows "
              f"{', '.join(f'{r:,.0f}' for r in rates)}) | GEMMs {floor.flops / 1e6:.2f} "
              f"MFLOP/sample at {floor.flops / floor_s / 1e9:.1f} GFLOP/s alone -> floor "
              f"{1 / floor_s:,.0f} samples/s (median, timed after each window) | step "
              f"{statistics.median(slower):.2f}x slower than the floor (median of the windows' "
              f"ratios; {slower[0]:.2f}-{slower[-1]:.2f})")
        if args.parts:
            ms = {k: 1e3 * v for k, v in phase_times(trainer, train, args.windows,
                                                      args.steps).items()}
            fl = {k: 1e3 * bs * v for k, v in floor_phases.items()}
            print(f"batch {bs}, ms per step: forward {ms['forward']:.2f} (GEMM floor "
                  f"{fl['forward']:.2f}), backward {ms['backward']:.2f} (GEMM floor "
                  f"{fl['backward']:.2f}), optimiser {ms['optimizer']:.2f} (no GEMMs)")
    print(f"samples/s: {results.get(128, next(iter(results.values()))):.0f}")


if __name__ == "__main__":
    main()
