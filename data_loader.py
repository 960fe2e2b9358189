"""MNIST as in-memory tensors, batched by index on the training device.

The four idx files are read from `data_dir` or `data_dir/MNIST` (.gz or raw). Missing files
are fetched with Paddle's own downloader; offline, a one-line error names what to put where.
"""
import gzip
import os

import numpy as np

from utils import RamError, save_image_grid

MEAN, STD = 0.1307, 0.3081
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(data_dir, stem):
    for folder in (data_dir, os.path.join(data_dir, "MNIST")):
        for name in (stem + ".gz", stem):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def read_idx(path):
    """Parse one idx file (images [N, H, W] uint8 or labels [N] uint8), checking its header."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise RamError(f"cannot read MNIST file {path} ({e}); delete it and download it again")
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8 or raw[3] not in (1, 3):
        raise RamError(f"{path} is not an MNIST idx file (bad header); replace it with the "
                       "original download")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise RamError(f"{path} is truncated or corrupt ({len(raw)} bytes, header says "
                       f"{expected}); replace it with the original download")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _download(split):
    """Fetch one split with Paddle's downloader; returns (images_path, labels_path)."""
    from paddle.vision.datasets import MNIST
    ds = MNIST(mode=split, download=True, backend="cv2")
    return ds.image_path, ds.label_path


def load_mnist(data_dir, split):
    """Returns images [N, 28, 28] uint8 and labels [N] int64 of split 'train' or 'test'."""
    paths = [_find(data_dir, stem) for stem in FILES[split]]
    if None in paths:
        try:
            paths = _download(split)
        except Exception as e:  # offline, proxy, disk: all mean the same to the user
            names = ", ".join(s + ".gz" for s in FILES[split])
            raise RamError(f"MNIST {split} files not found in {os.path.abspath(data_dir)} (or its "
                           f"MNIST/ subfolder) and the download failed ({type(e).__name__}); put "
                           f"{names} there or pass --data_dir") from None
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise RamError(f"MNIST {split} files disagree: {paths[0]} has shape {images.shape}, "
                       f"{paths[1]} has {labels.shape}; replace them with the original download")
    return images, labels.astype(np.int64)


def normalize(images):
    """uint8 [N, H, W] -> float32 [N, 1, H, W] with MNIST's mean and std, as the reference."""
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


class TensorLoader:
    """Batches of (x [B, C, H, W] float32, y [B] int64) gathered by index from device tensors.

    The whole split lives on the device once; an epoch is a permutation and one gather per
    batch, so there is no per-sample Python work in the hot path. The order of epoch e is a
    function of (seed, e) only, which makes resumed and repeated runs see the same batches.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, seed=0):
        import paddle
        self.x = paddle.to_tensor(normalize(images))
        self.y = paddle.to_tensor(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    @property
    def num_samples(self):
        return len(self.y)

    def __iter__(self):
        import paddle
        n = self.num_samples
        if self.shuffle:
            order = np.random.RandomState([self.seed, self.epoch]).permutation(n)
            order = paddle.to_tensor(order)
        for start in range(0, n, self.batch_size):
            if self.shuffle:
                idx = order[start:start + self.batch_size]
                yield paddle.gather(self.x, idx), paddle.gather(self.y, idx)
            else:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]


def split_indices(n, valid_size, seed, shuffle=True):
    """The reference's split: the first floor(valid_size * n) of a seeded permutation validate."""
    indices = np.arange(n)
    if shuffle:
        np.random.RandomState(seed).shuffle(indices)
    split = int(np.floor(valid_size * n))
    return indices[split:], indices[:split]


def get_train_valid_loader(data_dir, batch_size, random_seed, valid_size=0.1, shuffle=True,
                           show_sample=False, plot_dir="plots"):
    """Train and validation loaders over the MNIST training split."""
    images, labels = load_mnist(data_dir, "train")
    train_idx, valid_idx = split_indices(len(labels), valid_size, random_seed, shuffle)
    if show_sample:
        path = save_image_grid(images[train_idx[:9]], os.path.join(plot_dir, "mnist_sample.png"),
                               titles=labels[train_idx[:9]])
        print(f"[*] Saved a 3x3 sample of the training images to {path}")
    train = TensorLoader(images[train_idx], labels[train_idx], batch_size, shuffle, random_seed)
    valid = TensorLoader(images[valid_idx], labels[valid_idx], batch_size)
    return train, valid


def get_test_loader(data_dir, batch_size):
    images, labels = load_mnist(data_dir, "test")
    return TensorLoader(images, labels, batch_size)
