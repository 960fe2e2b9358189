"""Training cost per batch on a larger canvas: translated 60x60 against cluttered 100x100.

    python benchmarks/canvas_cost.py [--scales 3 4] [--batch_size 256] [--batches 10]
                                     [--repeats 4] [--code DIR]

RAM's glimpses cost the same on any image; what grows with the canvas is the per-batch work:
composing the canvases (data_loader.CanvasLoader) and what the retina builds once per batch
(its padded image and summed-area table). For each number of scales k, one Trainer per task
(6 glimpses of 12x12, scale 2, k scales; the default RNN recipe) times `--batches` real
training steps (Trainer.train_step, what `python main.py` runs) on fresh training batches,
and the composition of those batches apart. The tasks take turns batch by batch, so a load
spike on a shared machine hits both alike. Medians over the batches of `--repeats` passes
(the first pass warms up and is not counted), in ms per batch, as a Markdown table; the last
line is `ratio: R`, cluttered 100x100 over translated 60x60 (data + step) for the first k.

`--code DIR` imports the project from another checkout (for a before/after comparison); the
data is read from this checkout's data/.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scales", type=int, nargs="+", default=[3, 4],
                   help="numbers of scales k to time, each on both tasks")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--batches", type=int, default=10, help="timed batches per pass and task")
    p.add_argument("--repeats", type=int, default=4, help="timed passes (one more warms up)")
    p.add_argument("--code", default=ROOT, help="checkout whose code is timed")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.code))
    from utils import tune_cpu_env
    threads = tune_cpu_env()  # before Paddle loads, exactly as main.py

    import data_loader
    import config as flags_module
    from trainer import Trainer
    from utils import set_seed

    tasks = (("translated 60x60", ["--dataset", "translated", "--canvas", "60"]),
             ("cluttered 100x100", ["--dataset", "cluttered", "--canvas", "100"]))
    scratch = tempfile.mkdtemp()
    rows = []
    for k in args.scales:
        runs = []
        for name, flags in tasks:
            config = flags_module.get_config(flags + [
                "--patch_size", "12", "--glimpse_scale", "2", "--num_patches", str(k),
                "--batch_size", str(args.batch_size), "--logs_dir", scratch, "--ckpt_dir",
                scratch, "--plot_dir", scratch])
            if isinstance(config, tuple):  # (config, given), checked
                config = config[0]
            else:                          # older versions settle the config in place
                flags_module.check_config(config)
            set_seed(1)
            trainer = Trainer(config)
            train, _ = data_loader.get_train_valid_loader(
                args.data_dir, args.batch_size, 1, 0.1, dataset=config.dataset,
                canvas=config.canvas, clutter=config.clutter)
            runs.append({"name": name, "k": k, "trainer": trainer, "loader": train,
                         "data": [], "step": []})
        for repeat in range(args.repeats + 1):
            passes = []
            for run in runs:
                run["loader"].set_epoch(repeat)
                run["trainer"].model.train()
                passes.append(run["loader"].iterate())
            for _ in range(args.batches):
                for run, batches in zip(runs, passes):
                    tic = time.perf_counter()
                    x, y = next(batches)
                    x.sum().item()                     # waits for the composed batch
                    toc = time.perf_counter()
                    run["trainer"].train_step(x, y).loss.item()
                    tac = time.perf_counter()
                    if repeat:
                        run["data"].append(toc - tic)
                        run["step"].append(tac - toc)
        rows.extend(runs)

    def ms(values):
        return 1000.0 * statistics.median(values)

    print(f"code {os.path.abspath(args.code)}, MKL threads {threads}, batch {args.batch_size}, "
          f"{args.batches} batches x {args.repeats} passes, median ms per batch")
    print("| task | scales | data | step | data + step |")
    print("|---|--:|--:|--:|--:|")
    for run in rows:
        d, s = ms(run["data"]), ms(run["step"])
        print(f"| {run['name']} | {run['k']} | {d:.1f} | {s:.1f} | {d + s:.1f} |")
    ratios = []
    for k in args.scales:
        small, large = [r for r in rows if r["k"] == k]
        both = [ms(r["data"]) + ms(r["step"]) for r in (small, large)]
        ratios.append(both[1] / both[0])
        print(f"{k} scales: cluttered 100x100 / translated 60x60 = {ratios[-1]:.2f}x")
    print(f"ratio: {ratios[0]:.2f}")


if __name__ == "__main__":
    main()
