"""Shared fixtures and helpers of the RAM-Paddle test suite: an idx writer, a CLI runner, log
parsing, one-line error checks, a naive NumPy RAM, and the tiny MNIST runs most tests share.

Paths are resolved from this file, never from the working directory. Real data (MNIST and the
reference checkpoint) is optional locally (the tests that need it are skipped) but mandatory in
CI (env CI set): there a missing file is a failure. The NumPy RAM is a deliberately simple,
loop-based re-statement of the spec, written independently of the product code so that the
two can be compared. `pytest -m "not slow"` leaves out the tests marked slow.
"""
import gzip
import math
import os
import re
import shutil
import site
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

warnings.filterwarnings("ignore", message="No ccache found")


def pytest_configure(config):
    # Paddle's import-time notice about custom-op builds; irrelevant to these tests.
    config.addinivalue_line("filterwarnings", "ignore:No ccache found:UserWarning")


MAIN = ROOT / "main.py"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Nothing listens on port 9 (discard) locally: any download attempt fails at once.
DEAD_PROXY = "http://127.0.0.1:9"
TEST_ACC_RE = re.compile(r"\[\*\] Test Acc: (\d+)/(\d+) \((\d+\.\d\d)% - (\d+\.\d\d)%\)")
EPOCH_RE = re.compile(r"^epoch (\d+)/(\d+) \| lr ([0-9.e+-]+) std [0-9.e+-]+ \|", re.M)


# ---------------------------------------------------------------- files
def idx_bytes(arr):
    """The idx encoding of a uint8 array: 0, 0, 8 (uint8), ndim, big-endian uint32 dims, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path, arr, compress=None):
    """Write arr as an idx file; gzip-compressed when the name ends with .gz (or compress)."""
    path = Path(path)
    data = idx_bytes(arr)
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


# ---------------------------------------------------------------- CLI
def cli_env(**extra):
    """The environment for main.py subprocesses: offline (dead proxy), quiet, deterministic."""
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[k] = DEAD_PROXY
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    # If HOME is redirected, keep a --user install of paddle importable.
    env.setdefault("PYTHONUSERBASE", site.getuserbase())
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_main(args, cwd, timeout=120, **env):
    """Run `python main.py args` in cwd; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(MAIN), *map(str, args)], cwd=str(cwd),
                          env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


def stderr_lines(res):
    return [line for line in res.stderr.splitlines() if line.strip()]


def acc_lines(text):
    """All '[*] Test Acc' lines as (correct, n, acc, err) tuples."""
    return [(int(c), int(n), float(a), float(e)) for c, n, a, e in TEST_ACC_RE.findall(text)]


def log_line(log_text, prefix):
    """The first line of a log that starts with `prefix` (e.g. "epoch 2/2")."""
    return next(line for line in log_text.splitlines() if line.startswith(prefix))


def epoch_lines(log_text):
    """[(epoch, total, lr)] for every 'epoch N/M | lr X std S |' line of a log."""
    return [(int(e), int(t), float(lr)) for e, t, lr in EPOCH_RE.findall(log_text)]


# ---------------------------------------------------------------- naive NumPy RAM
def centre(coord, size):
    """floor(0.5 * (l + 1) * size), evaluated in float32 like the model's input."""
    c = np.float32(0.5) * ((np.float32(coord) + np.float32(1.0)) * np.float32(size))
    return int(np.floor(c))


def naive_glimpse(img, loc, g, k, s):
    """One image [C, H, W] and one location (x, y) -> phi [k*C*g*g] (float64).

    Zero-pad generously, slice each size x size window, mean-pool blocks of size // g.
    """
    img = np.asarray(img, dtype=np.float64)
    C, H, W = img.shape
    cx, cy = centre(loc[0], W), centre(loc[1], H)
    parts = []
    for i in range(k):
        size = g * s ** i
        pad = size + 1
        big = np.zeros((C, H + 2 * pad, W + 2 * pad))
        big[:, pad:pad + H, pad:pad + W] = img
        top, left = cy - size // 2 + pad, cx - size // 2 + pad
        win = big[:, top:top + size, left:left + size]
        f = size // g
        pooled = np.zeros((C, g, g))
        for r in range(g):
            for q in range(g):
                pooled[:, r, q] = win[:, r * f:(r + 1) * f, q * f:(q + 1) * f].mean(axis=(1, 2))
        parts.append(pooled.reshape(-1))
    return np.concatenate(parts)


def naive_patches(x, l, g, k, s):
    """The k full-resolution patches the Retina reads around l [B, 2] from x [B, C, H, W]:
    patch i, side g * s**i, covers [c - side // 2, c - side // 2 + side) on each axis (c the
    centre pixel), zeros outside the image. A list of k float64 arrays [B, C, side, side]."""
    x = np.asarray(x, dtype=np.float64)
    B, C, H, W = x.shape
    out = []
    for i in range(k):
        size = g * s ** i
        patches = np.zeros((B, C, size, size))
        for b in range(B):
            pad = size + 1
            big = np.zeros((C, H + 2 * pad, W + 2 * pad))
            big[:, pad:pad + H, pad:pad + W] = x[b]
            top = centre(l[b][1], H) - size // 2 + pad
            left = centre(l[b][0], W) - size // 2 + pad
            patches[b] = big[:, top:top + size, left:left + size]
        out.append(patches)
    return out


def naive_glimpses(x, l, g, k, s):
    """Batch version by a Python loop: x [B, C, H, W], l [B, 2] -> [B, k*C*g*g]."""
    return np.stack([naive_glimpse(x[b], l[b], g, k, s) for b in range(len(x))])


def relu(a):
    return np.maximum(a, 0.0)


def np_params(model):
    return {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}


def np_rollout(P, x, T, l0, noise, g, k, s, std):
    """The RAM episode in NumPy (Paddle Linear: y = x @ W + b, W [in, out]).

    Returns log_probas [B, classes], log_pi [B, T], baselines [B, T], locs [T, B, 2].
    """
    def lin(name, a):
        return a @ P[name + ".weight"] + P[name + ".bias"]

    x = np.asarray(x, dtype=np.float64)
    B = x.shape[0]
    h = np.zeros((B, P["rnn.h2h.weight"].shape[0]))
    l = np.asarray(l0, dtype=np.float32)
    locs, log_pis, baselines = [], [], []
    for t in range(T):
        locs.append(np.asarray(l, dtype=np.float64))
        phi = naive_glimpses(x, l, g, k, s)
        what = lin("sensor.fc3", relu(lin("sensor.fc1", phi)))
        where = lin("sensor.fc4", relu(lin("sensor.fc2", np.asarray(l, dtype=np.float64))))
        g_t = relu(what + where)
        h = relu(lin("rnn.i2h", g_t) + lin("rnn.h2h", h))
        mu = np.tanh(lin("locator.fc_lt", relu(lin("locator.fc", h))))
        sample = mu + std * np.asarray(noise[t], dtype=np.float64)
        lp = (-(sample - mu) ** 2 / (2 * std ** 2) - math.log(std)
              - 0.5 * math.log(2 * math.pi)).sum(axis=1)
        log_pis.append(lp)
        baselines.append(lin("baseliner.fc", h)[:, 0])
        l = np.clip(sample, -1.0, 1.0).astype(np.float32)
    logits = lin("classifier.fc", h)
    m = logits.max(axis=1, keepdims=True)
    log_probas = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return log_probas, np.stack(log_pis, 1), np.stack(baselines, 1), np.stack(locs)


# ---------------------------------------------------------------- shared checks and runs
def assert_one_error_line(res, *needles):
    """Exit code 2, no traceback, and stderr is exactly one 'error: ...' line with the needles."""
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = stderr_lines(res)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def train_args(data, work, *extra):
    """main.py flags for a small run on `data`: batch 32, 2 glimpses, an epoch checkpoint
    every epoch, no glimpse dumps, every output below `work`; `extra` (later flags win)."""
    return ["--data_dir", data, "--batch_size", "32", "--num_glimpses", "2", "--save_freq", "1",
            "--plot_freq", "0", "--ckpt_dir", work / "ckpt", "--logs_dir", work / "logs",
            "--plot_dir", work / "plots", *extra]


def load_ckpt(path):
    import paddle
    return paddle.load(str(path))


def beta1_pow(state):
    """Adam's beta1 power of a checkpoint: beta1 ** (1 + the optimizer steps taken)."""
    return float(np.asarray(state["optim_state"]["sensor.fc1.weight_beta1_pow_acc_0"]).ravel()[0])


MNIST_DIR = ROOT / "data" / "MNIST"
REFERENCE_CKPT = ROOT.parent / "shared" / "reference" / "ram_6_8x8_1_model_best.pdparams"
TINY_TRAIN, TINY_TEST = 600, 300


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(path, what):
    """Return path if it exists; else fail in CI, skip locally."""
    path = Path(path)
    if path.exists():
        return path
    msg = f"{what} not found at {path}"
    if in_ci():
        pytest.fail(f"{msg} (required in CI)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder with the four real MNIST idx .gz files."""
    for name in MNIST_FILES:
        require(MNIST_DIR / name, f"MNIST file {name}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def reference_ckpt():
    return require(REFERENCE_CKPT, "reference checkpoint ram_6_8x8_1_model_best.pdparams")


@pytest.fixture(scope="session")
def tiny_data(mnist_dir, tmp_path_factory):
    """A valid MNIST-format folder with the first 600 training and 300 test images."""
    from data_loader import read_idx
    out = tmp_path_factory.mktemp("tiny_mnist")
    for prefix, n in (("train", TINY_TRAIN), ("t10k", TINY_TEST)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{prefix}-{kind}"
            arr = read_idx(str(mnist_dir / (name + ".gz")))[:n]
            write_idx(out / (name + ".gz"), arr)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """One 2-epoch training run on the tiny data; tests must copy what they modify.

    --lr_patience 0 --lr_factor 0.5 make the learning rate drop as soon as the validation
    accuracy fails to improve, so the checkpoints carry a non-trivial scheduler state.
    """
    work = tmp_path_factory.mktemp("tiny_run")
    args = ["--data_dir", str(tiny_data), "--epochs", "2", "--batch_size", "32",
            "--save_freq", "1", "--plot_freq", "1", "--num_glimpses", "2", "--lr_patience", "0",
            "--lr_factor", "0.5", "--ckpt_dir", str(work / "ckpt"),
            "--logs_dir", str(work / "logs"), "--plot_dir", str(work / "plots")]
    res = run_main(args, cwd=work, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return SimpleNamespace(dir=work, ckpt_dir=work / "ckpt", logs_dir=work / "logs",
                           plot_dir=work / "plots", result=res, args=args)


@pytest.fixture
def ckpt_copy(tiny_run, tmp_path):
    """A private copy of the tiny run's checkpoint folder."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_run.ckpt_dir, dst)
    return dst
