"""Translated and cluttered MNIST (data_loader.CanvasLoader / make_loader, --dataset/--canvas/
--clutter): shapes, pixel range, the digit fully inside, the clutter count, fixed evaluation
sets, fresh training canvases every epoch, and the CLI around them.

Synthetic digits make the pixel checks exact: random values in [1, 255] (nothing is zero, so a
digit's footprint is exactly its 28x28 block and a transposed paste would show) or one distinct
constant value per digit (so every pasted piece says where it came from). The composition is
compared with a naive per-image NumPy loop written here from the spec.

Layout of CanvasLoader.params, one row per sample, K = clutter:
    [0:2] digit corner (row, col) | [2:2+K] source digit of each piece |
    [2+K:2+3K] crop corner in the source, (row, col) per piece | [2+3K:2+5K] paste corner.
"""
import hashlib
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, acc_lines, assert_one_error_line, cli_env, run_main
from config import get_config
from data_loader import (PIECE, TEST_SEED, VALID_SEED, CanvasLoader,
                         TensorLoader, default_clutter, get_test_loader,
                         get_train_valid_loader, load_mnist, make_loader)
from utils import RamError

D = 28  # MNIST digit side


# ------------------------------------------------------------------ helpers
def collect(loader):
    """Every batch of one pass, concatenated: x [N, 1, H, W] float32, y [N] int64 (NumPy)."""
    xs, ys = [], []
    for x, y in loader:
        assert x.dtype == paddle.float32 and y.dtype == paddle.int64
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def pixels(x):
    """Loader images x [N, 1, H, W] (intensities 0..255) -> [N, H, W] in [0, 1]."""
    return x[:, 0] / 255.0


def split_params(params, K):
    p = np.asarray(params.numpy() if hasattr(params, "numpy") else params)
    n = len(p)
    return (p[:, 0:2], p[:, 2:2 + K], p[:, 2 + K:2 + 3 * K].reshape(n, K, 2),
            p[:, 2 + 3 * K:2 + 5 * K].reshape(n, K, 2))


def naive_canvas(images, params, canvas, K):
    """The spec as a per-image loop: a blank canvas, the digit at its corner, then K 8x8 crops
    of their source digits pasted at their corners; overlaps keep the brighter pixel.
    images uint8 [N, 28, 28]; returns the intensities float32 [N, 1, canvas, canvas]."""
    corner, source, crop, paste = split_params(params, K)
    digits = images.astype(np.float32)
    out = np.zeros((len(images), canvas, canvas), dtype=np.float32)
    for i in range(len(images)):
        r, c = corner[i]
        block = out[i, r:r + D, c:c + D]
        np.maximum(block, digits[i], out=block)
        for k in range(K):
            (cr, cc), (pr, pc) = crop[i, k], paste[i, k]
            piece = digits[source[i, k], cr:cr + PIECE, cc:cc + PIECE]
            block = out[i, pr:pr + PIECE, pc:pc + PIECE]
            np.maximum(block, piece, out=block)
    return out[:, None]


def random_digits(n, seed=0):
    """n random 'digits' with values in [1, 255] (no zero pixel) and labels 0..n-1."""
    rng = np.random.RandomState(seed)
    return rng.randint(1, 256, size=(n, D, D)).astype(np.uint8), np.arange(n, dtype=np.int64)


def constant_digits(n):
    """Digit i is a 28x28 block of the constant value i + 1 (distinct, non-zero)."""
    assert n <= 255
    return (np.arange(1, n + 1, dtype=np.uint8)[:, None, None]
            * np.ones((1, D, D), dtype=np.uint8)), np.arange(n, dtype=np.int64)


# ------------------------------------------------------------------ shapes and range
@pytest.mark.parametrize("dataset,canvas,K", [("translated", 60, 0), ("cluttered", 60, 4),
                                              ("cluttered", 100, 8)])
def test_real_mnist_shapes_range_and_composition(tiny_data, dataset, canvas, K):
    """End to end on real test digits: shapes, dtypes, range, and the exact composition."""
    loader = get_test_loader(str(tiny_data), 128, dataset, canvas)
    assert isinstance(loader, CanvasLoader) and loader.clutter == K
    assert list(loader.params.shape) == [300, 2 + 5 * K]
    x, y = collect(loader)
    assert x.shape == (300, 1, canvas, canvas) and x.dtype == np.float32
    images, labels = load_mnist(str(tiny_data), "test")
    np.testing.assert_array_equal(y, labels)
    img = pixels(x)
    assert img.min() >= -1e-5 and img.max() <= 1 + 1e-5
    assert img.min() == pytest.approx(0, abs=1e-5) and img.max() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(x, naive_canvas(images, loader.params, canvas, K), atol=1e-6)
    corner = loader.params.numpy()[:, :2]
    for i in range(300):   # the digit lies whole inside and is not darkened by the clutter
        r, c = corner[i]
        block = img[i, r:r + D, c:c + D]
        assert np.all(block >= images[i] / 255.0 - 1e-5)
        if K == 0:
            np.testing.assert_allclose(block, images[i] / 255.0, atol=1e-5)
            assert np.abs(img[i]).sum() == pytest.approx(np.abs(block).sum(), abs=1e-3)


def test_mnist_dataset_stays_28x28(tiny_data):
    loader = get_test_loader(str(tiny_data), 100, "mnist", canvas=100, clutter=8)
    assert type(loader) is TensorLoader
    x, _ = collect(loader)
    assert x.shape == (300, 1, 28, 28)


# ------------------------------------------------------------------ translated
def test_translated_digit_fully_inside_and_blank_elsewhere():
    images, labels = random_digits(400, seed=1)
    N = 40
    loader = make_loader(images, labels, 128, "translated", canvas=N, clutter=5,
                         fixed_seed=123)                        # clutter ignored: translated
    assert loader.clutter == 0 and list(loader.params.shape) == [400, 2]
    x, y = collect(loader)
    np.testing.assert_array_equal(y, labels)
    img = pixels(x)
    corner = loader.params.numpy()
    assert corner.min() == 0 and corner.max() == N - D
    # uniform over 0..N-28 on both axes: every position is used (400 draws of 13 values)
    assert set(corner[:, 0].tolist()) == set(range(N - D + 1))
    assert set(corner[:, 1].tolist()) == set(range(N - D + 1))
    for i in range(len(images)):
        r, c = corner[i]
        np.testing.assert_allclose(img[i, r:r + D, c:c + D], images[i] / 255.0, atol=1e-5)
        outside = img[i].copy()
        outside[r:r + D, c:c + D] = 0
        assert np.abs(outside).max() < 1e-5
    np.testing.assert_allclose(x, naive_canvas(images, loader.params, N, 0), atol=1e-6)


def test_translated_on_a_28_canvas_is_the_digit_itself():
    images, labels = random_digits(20, seed=2)
    x, _ = collect(make_loader(images, labels, 8, "translated", canvas=28, fixed_seed=5))
    np.testing.assert_allclose(pixels(x), images / 255.0, atol=1e-5)


# ------------------------------------------------------------------ cluttered
def test_clutter_count_and_sources():
    """Digit i is the constant i + 1: the non-zero support of every canvas is exactly the
    digit's block plus its K pieces' blocks, each piece carries its source's value, and where
    nothing overlaps the image alone shows K pieces of 64 pixels."""
    n, N, K = 200, 100, 8
    images, labels = constant_digits(n)
    loader = make_loader(images, labels, 64, "cluttered", canvas=N, fixed_seed=7)
    assert loader.clutter == K == default_clutter(N)
    assert list(loader.params.shape) == [n, 2 + 5 * K]
    x, _ = collect(loader)
    img = np.rint(pixels(x) * 255).astype(int)             # back to the digits' uint8 values
    corner, source, crop, paste = split_params(loader.params, K)
    assert np.all((source >= 0) & (source < n))
    assert np.all(source != np.arange(n)[:, None]), "clutter cut from the sample itself"
    assert len(np.unique(source)) > n // 2                    # drawn from many digits
    assert crop.min() >= 0 and crop.max() <= D - PIECE
    assert paste.min() >= 0 and paste.max() <= N - PIECE
    assert corner.min() >= 0 and corner.max() <= N - D
    clean = 0
    for i in range(n):
        cover = np.zeros((N, N), dtype=int)
        r, c = corner[i]
        cover[r:r + D, c:c + D] += 1
        assert np.all(img[i, r:r + D, c:c + D] >= i + 1)      # digit whole, max-combined
        for k in range(K):
            pr, pc = paste[i, k]
            cover[pr:pr + PIECE, pc:pc + PIECE] += 1
            assert np.all(img[i, pr:pr + PIECE, pc:pc + PIECE] >= source[i, k] + 1)
        np.testing.assert_array_equal(img[i] > 0, cover > 0)  # nothing but digit + K pieces
        alone = (cover == 1)                                   # pixels with a single owner
        assert np.all(img[i, r:r + D, c:c + D][alone[r:r + D, c:c + D]] == i + 1)
        if cover.max() == 1:                                   # no overlap at all
            clean += 1
            outside = img[i].copy()
            outside[r:r + D, c:c + D] = 0
            assert np.count_nonzero(outside) == K * PIECE * PIECE
            values = sorted(np.unique(outside[outside > 0]).tolist())
            assert values == sorted(set((source[i] + 1).tolist()))
            assert i + 1 not in values
    assert clean >= 5, clean                                   # the count check did run


@pytest.mark.parametrize("N,K,clutter", [(60, 4, None), (100, 8, None), (60, 1, 1),
                                         (36, 30, 30), (28, 3, 3)])
def test_cluttered_equals_naive_loop(N, K, clutter):
    images, labels = random_digits(150, seed=N + K)
    loader = make_loader(images, labels, 64, "cluttered", canvas=N, clutter=clutter,
                         fixed_seed=11)
    assert loader.clutter == K
    x, y = collect(loader)
    np.testing.assert_array_equal(y, labels)
    assert x.shape == (150, 1, N, N)
    np.testing.assert_allclose(x, naive_canvas(images, loader.params, N, K), atol=1e-6)


def test_cluttered_zero_pieces_is_translated():
    images, labels = random_digits(50, seed=3)
    a = collect(make_loader(images, labels, 16, "cluttered", 60, clutter=0, fixed_seed=4))[0]
    b = collect(make_loader(images, labels, 16, "translated", 60, fixed_seed=4))[0]
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ defaults and config
def test_default_clutter_matches_the_paper():
    assert default_clutter(60) == 4 and default_clutter(100) == 8


def config_of(*argv):
    return get_config(list(argv))[0]


@pytest.mark.parametrize("argv,canvas,clutter", [
    (["--dataset", "cluttered", "--canvas", "60"], 60, 4),
    (["--dataset", "cluttered", "--canvas", "100"], 100, 8),
    (["--dataset", "cluttered"], 60, 4),                          # --canvas defaults to 60
    (["--dataset", "translated", "--canvas", "100"], 100, 0),
    (["--dataset", "mnist", "--canvas", "100"], 28, 0),
    ([], 28, 0),
])
def test_check_config_settles_canvas_and_clutter(argv, canvas, clutter):
    config = config_of(*argv)
    assert (config.canvas, config.clutter) == (canvas, clutter)


def test_config_default_clutter_agrees_with_data_loader():
    for canvas in range(28, 141):
        assert config_of("--dataset", "cluttered", "--canvas", str(canvas)).clutter == \
            default_clutter(canvas), canvas


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "translated", "--canvas", "27"], "--canvas"),
    (["--dataset", "cluttered", "--canvas", "10"], "--canvas"),
])
def test_check_config_rejects_bad_canvas(argv, needle):
    with pytest.raises(RamError) as e:
        get_config(argv)
    msg = str(e.value)
    assert needle in msg and argv[-1] in msg and "\n" not in msg


def test_make_loader_rejects_small_canvas():
    images, labels = random_digits(4)
    for dataset in ("translated", "cluttered"):
        with pytest.raises(RamError) as e:
            make_loader(images, labels, 4, dataset, canvas=27)
        assert "--canvas" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fixed_seed", [None, TEST_SEED])
def test_make_loader_rejects_negative_clutter(fixed_seed):
    images, labels = random_digits(4)
    with pytest.raises(RamError) as e:
        loader = make_loader(images, labels, 4, "cluttered", canvas=60, clutter=-1,
                             fixed_seed=fixed_seed)
        next(iter(loader))
    assert "--clutter" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "cluttered", "--canvas", "20"], "--canvas must be >= 28"),
])
def test_cli_rejects_bad_canvas_or_clutter(tmp_path, argv, needle):
    res = run_main([*argv, "--data_dir", tmp_path / "nowhere", "--ckpt_dir", tmp_path / "ckpt",
                    "--logs_dir", tmp_path / "logs", "--plot_dir", tmp_path / "plots"],
                   cwd=tmp_path, timeout=60)
    assert_one_error_line(res, needle, f"(got {argv[-1]})")
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------ fixed evaluation sets
def test_test_set_is_fixed(tiny_data):
    np.random.seed(1)
    paddle.seed(1)
    a = get_test_loader(str(tiny_data), 128, "cluttered", 60)
    xa, ya = collect(a)
    np.random.seed(2)                                   # global generators must not matter
    paddle.seed(2)
    b = get_test_loader(str(tiny_data), 70, "cluttered", 60)   # nor the batch size
    xb, yb = collect(b)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(a.params.numpy(), b.params.numpy())
    xa2, _ = collect(a)                                 # a second pass, e.g. a later epoch
    a.set_epoch(5)                                      # the trainer may call it: no effect
    xa3, _ = collect(a)
    np.testing.assert_array_equal(xa, xa2)
    np.testing.assert_array_equal(xa, xa3)
    # TEST_SEED is what fixes it: make_loader with it gives the same canvases
    images, labels = load_mnist(str(tiny_data), "test")
    c = make_loader(images, labels, 300, "cluttered", 60, fixed_seed=TEST_SEED)
    np.testing.assert_array_equal(collect(c)[0], xa)
    other = make_loader(images, labels, 300, "cluttered", 60, fixed_seed=TEST_SEED + 1)
    assert not np.array_equal(collect(other)[0], xa)


PARAMS_HASH_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {root!r})
from data_loader import TEST_SEED, make_loader
loader = make_loader(np.zeros((10000, 28, 28), np.uint8), np.zeros(10000, np.int64), 1000,
                     "cluttered", 100, fixed_seed=TEST_SEED)
print(hashlib.sha256(loader.params.numpy().astype("<i8").tobytes()).hexdigest())
"""


def test_test_set_placements_are_the_same_in_another_process():
    """The canvases of a 10000-image test set depend on TEST_SEED only, not on the process."""
    images = np.zeros((10000, D, D), np.uint8)
    loader = make_loader(images, np.zeros(10000, np.int64), 1000, "cluttered", 100,
                         fixed_seed=TEST_SEED)
    digest = hashlib.sha256(loader.params.numpy().astype("<i8").tobytes()).hexdigest()
    res = subprocess.run([sys.executable, "-c", PARAMS_HASH_SCRIPT.format(root=str(ROOT))],
                         capture_output=True, text=True, timeout=60, env=cli_env(),
                         cwd=str(ROOT.parent))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == digest
    p = loader.params.numpy()
    assert p[:, :2].max() == 100 - D and p[:, :2].min() == 0


def test_validation_set_is_fixed_and_training_set_is_fresh_every_epoch(tiny_data):
    kw = dict(valid_size=0.1, dataset="cluttered", canvas=60)
    train_a, valid_a = get_train_valid_loader(str(tiny_data), 64, 1, **kw)
    train_b, valid_b = get_train_valid_loader(str(tiny_data), 32, 1, **kw)
    assert isinstance(valid_a, CanvasLoader) and valid_a.clutter == 4
    assert valid_a.fixed_seed == VALID_SEED and train_a.fixed_seed is None
    va, vya = collect(valid_a)
    assert va.shape == (60, 1, 60, 60)
    np.testing.assert_array_equal(va, collect(valid_b)[0])
    np.testing.assert_array_equal(vya, collect(valid_b)[1])
    np.testing.assert_array_equal(va, collect(valid_a)[0])        # second pass
    # the clutter of the validation set comes from validation digits only
    src = split_params(valid_a.params, 4)[1]
    assert src.max() < 60

    def epoch(loader, e):
        loader.set_epoch(e)
        x, y = collect(loader)
        return x, y, loader.params.numpy().copy()

    x0, y0, p0 = epoch(train_a, 0)
    assert x0.shape == (540, 1, 60, 60)
    x1, y1, p1 = epoch(train_a, 1)
    assert not np.array_equal(p0, p1)
    assert np.mean(np.any(p0 != p1, axis=1)) > 0.95     # fresh placements for ~every sample
    assert not np.array_equal(y0, y1)                    # the order is reshuffled too
    assert not np.array_equal(x0, x1)
    x0b, y0b, p0b = epoch(train_a, 0)                    # epoch 0 again: identical
    np.testing.assert_array_equal(p0, p0b)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    # a separately built loader with the same seed (other batch size) gives the same epoch 0
    xb, yb, pb = epoch(train_b, 0)
    np.testing.assert_array_equal(pb, p0)
    np.testing.assert_array_equal(xb, x0)
    np.testing.assert_array_equal(yb, y0)


def test_training_canvases_depend_on_seed_and_epoch_and_match_the_naive_loop():
    images, labels = random_digits(120, seed=4)

    def run(seed, e):
        loader = make_loader(images, labels, 50, "cluttered", 60, shuffle=True, seed=seed)
        loader.set_epoch(e)
        x, y = collect(loader)
        assert sorted(y.tolist()) == list(range(120))     # every sample once
        ref = naive_canvas(images, loader.params, 60, 4)[y]  # labels identify the samples
        np.testing.assert_allclose(x, ref, atol=1e-6)
        return x[np.argsort(y)]

    def changed(a, b):  # fraction of samples whose canvas differs
        return np.mean(np.abs(a - b).reshape(len(a), -1).max(1) > 1e-3)

    a = run(1, 0)
    np.testing.assert_array_equal(a, run(1, 0))
    assert changed(a, run(1, 1)) > 0.95
    assert changed(a, run(2, 0)) > 0.95


def test_training_placements_are_independent_of_the_batch_order():
    """64 digits on a 91x91 canvas: 64 possible corner rows, 64 order positions. Over 100
    epochs, the sample that comes last should match sample 0's corner row ~1/64 of the time."""
    images, labels = random_digits(64, seed=6)
    loader = make_loader(images, labels, 64, "translated", canvas=D + 63, shuffle=True, seed=1)
    same = 0
    for e in range(100):
        loader.set_epoch(e)
        _, y = collect(loader)
        same += int(y[-1] == loader.params.numpy()[0, 0])
    assert same < 20, same


# ------------------------------------------------------------------ main.py end to end
@pytest.mark.slow
def test_cli_trains_and_tests_translated(tiny_data, tmp_path):
    name = "ram_2_8x8_1_translated40"
    common = ["--data_dir", tiny_data, "--logs_dir", tmp_path / "logs",
              "--plot_dir", tmp_path / "plots"]
    res = run_main(["--dataset", "translated", "--canvas", "40", "--epochs", "1",
                    "--num_glimpses", "2", "--batch_size", "64", "--ckpt_dir", tmp_path / "ckpt",
                    "--plot_freq", "1", *common], cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    ckpt = tmp_path / "ckpt" / f"{name}_model_best.pdparams"
    assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    stored = paddle.load(str(ckpt))["config"]
    assert (stored["dataset"], stored["canvas"], stored["clutter"]) == ("translated", 40, 0)
    # the glimpses dumped during training are 40x40 canvases
    import pickle
    with open(tmp_path / "plots" / name / "g_1.p", "rb") as f:
        assert pickle.load(f).shape == (9, 40, 40)

    # flags say mnist (the default): the checkpoint's dataset and canvas are adopted
    res = run_main(["--is_train=False", "--ckpt", ckpt, "--ckpt_dir", tmp_path / "other",
                    *common], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    accs = acc_lines(res.stdout)
    assert len(accs) == 1 and accs[0][1] == 300, res.stdout
    assert "Test Acc" in (tmp_path / "logs" / f"{name}_test.log").read_text()
    assert not (tmp_path / "logs" / "ram_2_8x8_1_test.log").exists()
