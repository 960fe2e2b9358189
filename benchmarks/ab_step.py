"""Paired A/B of the real training step of two versions of the code: is a change faster?

    python benchmarks/ab_step.py --base HEAD~1 [--batch_sizes 128 512] [--rounds 12]
                                 [--steps 20] [--flags "--dataset translated ..."]

This machine's speed drifts by tens of percent within minutes, so two benchmark runs made
one after the other compare moments as much as code. Here one worker process per version
(`--base`, a git commit checked out into a temporary worktree, and this checkout as it is)
builds a Trainer and holds MNIST batches; the driver then asks them in turn for one window
of `--steps` real training steps (Trainer.train_step, what `python main.py` runs, with main.py's
`--flags` if given: another dataset or glimpse network), `--rounds`
times, each window right after the other's. The one waiting blocks on a pipe and uses no
CPU; a pause of `--settle` seconds between windows lets its MKL threads stop spinning. A
first round warms both up and is not counted. The verdict is the median of the rounds' paired
ratios, base time / this checkout's time (> 1: this checkout is faster), with their range.
Each worker sets its own version's math-library environment (utils.tune_cpu_env), so a change
there is compared too. Last line: `ratio: R` for the first batch size.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import sys, time
root, data_dir, batch, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5].split()
sys.path.insert(0, root)
from utils import tune_cpu_env
tune_cpu_env()
import data_loader
import config as flags_module
from trainer import Trainer
from utils import set_seed
scratch = sys.argv[4]
config = flags_module.get_config(flags + ["--batch_size", str(batch), "--logs_dir", scratch,
                                          "--ckpt_dir", scratch])
if isinstance(config, tuple):  # (config, given): get_config checks the flags itself
    config = config[0]
else:                          # versions whose check_config settles the config in place
    flags_module.check_config(config)
set_seed(1)
trainer = Trainer(config)
train, _ = data_loader.get_train_valid_loader(data_dir, batch, 1, 0.1, dataset=config.dataset,
                                              canvas=config.canvas, clutter=config.clutter)
data = [b for b, _ in zip(train, range(20))]
trainer.model.train()
for x, y in data[:3]:
    trainer.train_step(x, y)
print("ready", flush=True)
for line in sys.stdin:
    steps = int(line)
    tic = time.perf_counter()
    for i in range(steps):
        ep = trainer.train_step(*data[i % len(data)])
    ep.loss.item()
    print(time.perf_counter() - tic, flush=True)
"""


class Worker:
    """A script in its own process, driven over a pipe: each request line gets back one line
    of numbers (for ab_step, seconds for a window of steps). `code` runs as `python -c code
    *argv` in `cwd`; it prints "ready" when set up. Its stderr goes to scratch/stderr.txt."""

    def __init__(self, code, argv, scratch, cwd=None):
        os.makedirs(scratch, exist_ok=True)
        self.where = argv[0]
        self.err = open(os.path.join(scratch, "stderr.txt"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, argv)], cwd=cwd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)
        for line in self.proc.stdout:  # the Trainer logs to stdout as well
            if line.strip() == "ready":
                break
        else:
            self._died("did not start")

    def window(self, request):
        """Send one request; returns the numbers of the reply line."""
        self.proc.stdin.write(f"{request}\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            self._died("stopped")
        return [float(v) for v in reply.split()]

    def _died(self, what):
        """Exit with the worker's last line of stderr (its error, usually)."""
        self.proc.wait()
        self.err.seek(0)
        last = (self.err.read().strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: the worker in {self.where} {what}: {last}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.err.close()


def git(*args):
    res = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    if res.returncode:
        last = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise SystemExit(f"error: git {' '.join(args)}: {last}")
    return res.stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the git commit to compare this checkout with")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--settle", type=float, default=0.3)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--flags", default="", help="main.py flags for both versions, one string")
    args = p.parse_args()
    if min(args.rounds, args.steps, *args.batch_sizes) < 1:
        p.error("--rounds, --steps and --batch_sizes must be >= 1")
    base = git("rev-parse", "--short", "--verify", args.base + "^{commit}")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    head = git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "base")
        git("worktree", "add", "--detach", tree, base)
        try:
            for batch in args.batch_sizes:
                workers = {name: Worker(WORKER, [root, os.path.abspath(args.data_dir), batch,
                                                 os.path.join(tmp, name), args.flags],
                                        os.path.join(tmp, name))
                           for name, root in (("base", tree), ("this", ROOT))}
                times = {name: [] for name in workers}
                for r in range(args.rounds + 1):  # round 0 warms both up
                    for name, worker in workers.items():
                        time.sleep(args.settle)
                        seconds = worker.window(args.steps)[0]
                        if r:
                            times[name].append(seconds)
                for worker in workers.values():
                    worker.close()
                ratios = sorted(b / t for b, t in zip(times["base"], times["this"]))
                ratio = statistics.median(ratios)
                first = ratio if first is None else first
                ms = {n: 1e3 * statistics.median(v) / args.steps for n, v in times.items()}
                print(f"batch {batch}: base {base} {ms['base']:.2f} ms/step, this {head} "
                      f"{ms['this']:.2f} ms/step | base/this {ratio:.3f} (median of {args.rounds} "
                      f"paired windows; {ratios[0]:.2f}-{ratios[-1]:.2f})", flush=True)
        finally:
            git("worktree", "remove", "--force", tree)
    print(f"ratio: {first:.3f}")


if __name__ == "__main__":
    main()
