"""data_loader: idx parsing, the train/valid split, TensorLoader order and normalisation."""
import gzip

import numpy as np
import paddle
import pytest

import data_loader
from conftest import idx_bytes, write_idx
from data_loader import (TensorLoader, get_test_loader, get_train_valid_loader,
                         load_mnist, normalize, pixels, read_idx,
                         split_indices)
from utils import RamError


# ------------------------------------------------------------------ idx files
def test_idx_writer_round_trip_gz_and_raw(tmp_path):
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert idx_bytes(labels)[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3])
    for suffix in (".gz", ""):
        pi = write_idx(tmp_path / ("i" + suffix), imgs)
        pl = write_idx(tmp_path / ("l" + suffix), labels)
        np.testing.assert_array_equal(read_idx(str(pi)), imgs)
        np.testing.assert_array_equal(read_idx(str(pl)), labels)


def test_real_mnist_headers(mnist_dir):
    labels = read_idx(str(mnist_dir / "t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_tiny_data_dir_is_valid_mnist(tiny_data):
    images, labels = load_mnist(str(tiny_data), "train")
    assert images.shape == (600, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (600,) and labels.dtype == np.int64
    assert labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]      # the famous first MNIST digits
    images, labels = load_mnist(str(tiny_data), "test")
    assert images.shape == (300, 28, 28) and labels[:3].tolist() == [7, 2, 1]


def test_load_mnist_finds_mnist_subfolder_and_raw_files(tiny_data, tmp_path):
    sub = tmp_path / "MNIST"
    sub.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(tiny_data / (stem + ".gz"), "rb") as f:
            (sub / stem).write_bytes(f.read())                 # uncompressed copies
    images, labels = load_mnist(str(tmp_path), "test")
    assert images.shape == (300, 28, 28) and labels[:3].tolist() == [7, 2, 1]


@pytest.mark.parametrize("kind", ["wrong_magic", "truncated_data", "truncated_gzip", "not_gzip"])
def test_read_idx_rejects_corrupt_files(tmp_path, kind):
    good = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "f.gz"
    if kind == "wrong_magic":
        with gzip.open(path, "wb") as f:
            f.write(bytes([0x1F, 0x8B, 8, 3]) + good[4:])        # a gzip magic, not idx
    elif kind == "truncated_data":
        with gzip.open(path, "wb") as f:
            f.write(good[:-10])
    elif kind == "truncated_gzip":
        with gzip.open(path, "wb") as f:
            f.write(np.random.RandomState(0).bytes(5000))
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(b"definitely not gzip data" * 10)
    with pytest.raises(RamError) as e:
        read_idx(str(path))
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg


def test_read_idx_rejects_corrupted_deflate_stream(tmp_path):
    path = tmp_path / "f.gz"
    pattern = (np.arange(20 * 28 * 28) % 13 * 7).reshape(20, 28, 28)   # compresses to ~100 B
    raw = bytearray(gzip.compress(idx_bytes(pattern), mtime=0))
    for i in range(20, 60):                  # inside the deflate body (the gzip header is 10 B)
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RamError):
        read_idx(str(path))


def test_mismatched_image_and_label_counts(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(RamError, match="disagree"):
        load_mnist(str(tmp_path), "test")


# ------------------------------------------------------------------ split
def test_split_indices_sizes_and_disjoint():
    train, valid = split_indices(600, 0.1, seed=1)
    assert len(train) == 540 and len(valid) == 60
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(600))
    train2, valid2 = split_indices(600, 0.1, seed=1)
    np.testing.assert_array_equal(valid, valid2)
    _, valid3 = split_indices(600, 0.1, seed=2)
    assert set(valid.tolist()) != set(valid3.tolist())
    assert len(split_indices(601, 0.1, 1)[1]) == 60            # floor(60.1)


def test_train_valid_loaders_on_tiny_set(tiny_data):
    train, valid = get_train_valid_loader(str(tiny_data), 32, random_seed=1, valid_size=0.1)
    assert train.num_samples == 540 and valid.num_samples == 60
    assert len(train) == 17 and len(valid) == 2                 # ceil(540/32), ceil(60/32)
    _, labels = load_mnist(str(tiny_data), "train")
    ys = np.concatenate([train.y.numpy(), valid.y.numpy()])
    assert np.bincount(ys, minlength=10).tolist() == np.bincount(labels, minlength=10).tolist()
    x, y = next(iter(train))
    assert list(x.shape) == [32, 1, 28, 28] and x.dtype == paddle.float32
    assert y.dtype == paddle.int64
    sizes = [int(b[1].shape[0]) for b in valid]
    assert sizes == [32, 28]


def test_test_loader_is_unshuffled(tiny_data):
    loader = get_test_loader(str(tiny_data), 128)
    assert loader.num_samples == 300 and len(loader) == 3
    ys = np.concatenate([y.numpy() for _, y in loader])
    _, labels = load_mnist(str(tiny_data), "test")
    np.testing.assert_array_equal(ys, labels)


# ------------------------------------------------------------------ TensorLoader order
def order_of(loader, epoch):
    loader.set_epoch(epoch)
    return np.concatenate([y.numpy() for _, y in loader]).tolist()


def make_loader(seed, shuffle=True, n=100, bs=16):
    images = (np.arange(n)[:, None, None] * np.ones((1, 2, 2))).astype(np.uint8)
    return TensorLoader(images, np.arange(n, dtype=np.int64), bs, shuffle=shuffle, seed=seed)


def test_shuffle_order_is_a_function_of_seed_and_epoch():
    a, b = make_loader(3), make_loader(3)
    e0 = order_of(a, 0)
    np.random.seed(99)                                   # global generators must not matter
    paddle.seed(99)
    assert order_of(b, 0) == e0
    assert order_of(a, 0) == e0                          # repeatable on the same loader
    assert sorted(e0) == list(range(100))                # a permutation
    assert e0 != list(range(100))
    e1 = order_of(a, 1)
    assert e1 != e0 and sorted(e1) == list(range(100))
    assert order_of(make_loader(4), 0) != e0


def test_images_follow_their_labels_when_shuffled():
    loader = make_loader(5)
    loader.set_epoch(2)
    for x, y in loader:
        # pixel value i belongs to label i, delivered as the intensity itself
        np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], y.numpy().astype(np.float32))


def test_no_shuffle_keeps_order():
    assert order_of(make_loader(3, shuffle=False), 5) == list(range(100))


def test_pixels_are_intensities_and_normalize_is_the_reference_input():
    images = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)
    out = pixels(images)
    assert out.shape == (1, 1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [[0, 255], [51, 128]])
    np.testing.assert_allclose(normalize(images)[0, 0],
                               [[-0.424213, 2.821487], [0.224927, 1.205001]], atol=1e-5)


def test_data_loader_module_names_the_expected_files():
    assert data_loader.FILES["train"] == ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    assert data_loader.FILES["test"] == ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
