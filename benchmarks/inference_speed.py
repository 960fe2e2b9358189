"""Images/s of an exported Paddle Inference model against the dygraph model on the test set.

    python benchmarks/inference_speed.py [--ckpt FILE] [--batch_size 512] [--repeats 3]

Exports the checkpoint (default: the shipped 28x28 model) with export.export into a
scratch folder, then runs the 10,000 test images through both, alternately, `--repeats` times:

  dygraph    RecurrentAttention.predict under paddle.no_grad, the episode main.py
             --is_train=False runs (here at the policy's mean and the centre as first fixation,
             as the exported model takes it);
  inference  the paddle.inference predictor of the exported model (CPU), fed numpy batches;
  onnx       with --onnx, the model converted by paddle2onnx, run by onnxruntime (CPU).

It checks that both predict the same classes, and prints the median images/s of each and
their ratio, with the date, commit and CPU (append the output to
logs/benchmark_inference.log).
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import cpu_info, tune_cpu_env  # noqa: E402

MKL_THREADS = tune_cpu_env()  # before Paddle loads, exactly as main.py

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import data_loader  # noqa: E402
import export  # noqa: E402
from checkpoint import load_model  # noqa: E402


def cpu_name():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown CPU")
    return name + (", AVX-512" if "avx512f" in cpu_info()[1] else ", no AVX-512")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=os.path.join(ROOT, "ckpt", "pretrained",
                                                  "ram_6_8x8_1_model_best.pdparams"))
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also convert to ONNX and time onnxruntime")
    args = p.parse_args()
    paddle.set_device("cpu")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"### {datetime.date.today()} commit {commit}, {cpu_name()}, {MKL_THREADS} MKL threads: "
          f"python benchmarks/inference_speed.py --ckpt {os.path.relpath(args.ckpt, ROOT)} "
          f"--batch_size {args.batch_size} --repeats {args.repeats}")
    with tempfile.TemporaryDirectory() as scratch:
        export.export(args.ckpt, scratch)
        predictor, _ = export.predictor(scratch)
        model, cfg = load_model(args.ckpt)
        loader = data_loader.get_test_loader(args.data_dir, args.batch_size, cfg.dataset,
                                             cfg.canvas, cfg.clutter)
        batches = [(x.numpy(), y.numpy()) for x, y in loader]
        n = sum(len(y) for _, y in batches)
        learned = cfg.first_fixation == "learned"

        def dygraph():
            preds = []
            with paddle.no_grad():
                for x, _ in batches:
                    l_0 = None if learned else paddle.zeros([len(x), 2])
                    preds.append(model.predict(paddle.to_tensor(x), l_0)[0].argmax(1).numpy())
            return np.concatenate(preds)

        def inference():
            preds = []
            for x, _ in batches:
                l_0 = None if learned else np.zeros((len(x), 2), np.float32)
                preds.append(export.run(predictor, x, l_0)[0].argmax(1))
            return np.concatenate(preds)

        runs = [("dygraph", dygraph), ("inference", inference)]
        if args.onnx:
            import onnxruntime as ort
            onnx_file = os.path.join(scratch, "ram.onnx")
            subprocess.run(["paddle2onnx", "--model_dir", scratch, "--model_filename",
                            "inference.json", "--params_filename", "inference.pdiparams",
                            "--save_file", onnx_file], capture_output=True, check=True)
            session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])

            def onnx():
                preds = []
                for x, _ in batches:
                    feed = {"x": x} if learned else {"x": x, "l_0": np.zeros((len(x), 2), np.float32)}
                    preds.append(session.run(None, feed)[0].argmax(1))
                return np.concatenate(preds)
            runs.append(("onnx", onnx))
        times = {name: [] for name, _ in runs}
        preds = {}
        for _ in range(args.repeats):
            for name, f in runs:
                tic = time.perf_counter()
                preds[name] = f()
                times[name].append(time.perf_counter() - tic)
        labels = np.concatenate([y for _, y in batches])
        same = {name: int((preds["dygraph"] == preds[name]).sum()) for name in preds}
        for name in times:
            rate = n / statistics.median(times[name])
            err = 100.0 * float((preds[name] != labels).mean())
            print(f"{name:9s} {rate:9.0f} images/s  test error {err:.2f}%")
        ratio = statistics.median(times["dygraph"]) / statistics.median(times["inference"])
        for name in same:
            if name != "dygraph":
                print(f"same predictions as dygraph, {name}: {same[name]}/{n}")
        print(f"ratio (inference / dygraph images/s): {ratio:.2f}")
        if "onnx" in times:
            ratio = statistics.median(times["dygraph"]) / statistics.median(times["onnx"])
            print(f"ratio (onnx / dygraph images/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
