"""Shared fixtures for the RAM-Paddle test suite.

Paths are resolved from this file, never from the working directory. Real data (MNIST and the
reference checkpoint) is optional locally (the tests that need it are skipped) but mandatory in
CI (env CI set): there a missing file is a failure.
"""
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

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

import _util  # noqa: E402  (needs the sys.path set-up above)

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
    for name in _util.MNIST_FILES:
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
            _util.write_idx(out / (name + ".gz"), arr)
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
    res = _util.run_main(args, cwd=work, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return SimpleNamespace(dir=work, ckpt_dir=work / "ckpt", logs_dir=work / "logs",
                           plot_dir=work / "plots", result=res, args=args)


@pytest.fixture
def ckpt_copy(tiny_run, tmp_path):
    """A private copy of the tiny run's checkpoint folder."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_run.ckpt_dir, dst)
    return dst
