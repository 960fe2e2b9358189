"""MNIST and the paper's translated / cluttered variants, batched on the training device.

The four idx files are read from `data_dir` or `data_dir/MNIST` (.gz or raw). Missing files
are fetched with Paddle's own downloader; offline, a one-line error names what to put where.

Datasets (`--dataset`):
  mnist       the 28x28 digits.
  translated  each digit placed at a uniformly random position fully inside a blank
              canvas x canvas image (the paper: 60x60).
  cluttered   the same, plus `clutter` random 8x8 pieces cut from other random digits of the
              same split, pasted at random positions (the paper: 4 at 60x60, 8 at 100x100).
Training canvases are drawn afresh every epoch from (random_seed, epoch); validation and test
canvases are fixed by VALID_SEED and TEST_SEED, identical on every run and machine.

Batches hold pixel intensities 0..255 (float32); the model's retina normalises them with
MEAN and STD, after pooling (see modules.Retina).
"""
import contextlib
import gzip
import io
import os
import zlib

import numpy as np

from utils import RamError, check_batch_split

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and std (of intensities / 255), as the reference
VALID_SEED, TEST_SEED = 20140624, 20141208  # fixed evaluation canvases (any run, any machine)
PIECE = 8                                   # side of a clutter piece, as in the paper
DATASETS = ("mnist", "translated", "cluttered")
NUM_CLASSES = 10
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # one public copy of the files


def default_clutter(canvas):
    """The paper's clutter density: 4 pieces on 60x60, 8 on 100x100."""
    return 4 if canvas <= 60 else 8


def settle_canvas(dataset, canvas, clutter):
    """(canvas, clutter) that `dataset` is built with: 28 and 0 for mnist, no clutter for
    translated, default_clutter(canvas) for cluttered when clutter is None. One RamError for
    what cannot be built."""
    if dataset not in DATASETS:
        raise RamError(f"unknown --dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "mnist":
        return 28, 0
    if canvas < 28:
        raise RamError(f"--canvas must be >= 28, the digits' size (got {canvas})")
    k = 0 if dataset == "translated" else default_clutter(canvas) if clutter is None else clutter
    if k < 0:
        raise RamError(f"--clutter must be >= 0 (got {k})")
    return canvas, k


FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_mnist(data_dir, split):
    """Paths of split's (images, labels) idx files in data_dir or its MNIST/ subfolder,
    gzipped or not; None for a file that is in neither."""
    def find(stem):
        for folder in (data_dir, os.path.join(data_dir, "MNIST")):
            for name in (stem + ".gz", stem):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    return path
        return None
    return [find(stem) for stem in FILES[split]]


def read_idx(path, ndim=None):
    """Parse one idx file (images [N, H, W] uint8 or labels [N] uint8), checking its header;
    `ndim` (3 images, 1 labels) is the kind of file expected."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise RamError(f"cannot read MNIST file {path} ({e}); delete it and download it again")
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    kinds = {0x801: "labels", 0x803: "images"}
    if len(raw) < 8 or magic not in kinds or (ndim is not None and magic != 0x800 + ndim):
        want = (f"0x{0x800 + ndim:08x} ({kinds[0x800 + ndim]})" if ndim
                else "0x00000801 or 0x00000803")
        got = "no header" if magic is None else f"magic number 0x{magic:08x}" + (
            f" ({kinds[magic]})" if magic in kinds else "")
        raise RamError(f"{path} is not the MNIST idx file expected: {got}, expected {want}; "
                       "replace it with the original download")
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
    print(f"[*] MNIST {split} files not found locally: downloading with Paddle's downloader")
    # Its chatter (several lines per file) would bury the one line we print if it fails.
    with contextlib.redirect_stderr(io.StringIO()):
        ds = MNIST(mode=split, download=True, backend="cv2")
    return ds.image_path, ds.label_path


def load_mnist(data_dir, split):
    """Returns images [N, 28, 28] uint8 and labels [N] int64 of split 'train' or 'test'."""
    paths = find_mnist(data_dir, split)
    if None in paths:
        try:
            paths = _download(split)
        except Exception as e:  # offline, proxy, disk: all mean the same to the user
            names = ", ".join(stem + ".gz" for pair in FILES.values() for stem in pair)
            raise RamError(f"MNIST {split} files not found in {os.path.abspath(data_dir)} (or its "
                           f"MNIST/ subfolder) and the download failed ({type(e).__name__}); put "
                           f"the four MNIST files {names} there (from "
                           f"{MNIST_URL}, or any MNIST mirror) or pass --data_dir") from None
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise RamError(f"{paths[1]} holds label {int(labels.max())}, outside the digits 0..9 "
                       f"(at index {int(labels.argmax())}); replace it with the original download")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise RamError(f"MNIST {split} files disagree: {paths[0]} has shape {images.shape}, "
                       f"{paths[1]} has {labels.shape}; replace them with the original download")
    return images, labels.astype(np.int64)


def pixels(images):
    """uint8 [N, H, W] -> float32 [N, 1, H, W] intensities 0..255: what the model reads."""
    return images.astype(np.float32)[:, None]


def normalize(images):
    """uint8 [N, H, W] -> float32 [N, 1, H, W] with MNIST's mean and std: the reference
    implementation's input, which its model reads as it is."""
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


class TensorLoader:
    """Batches of (x [B, C, H, W] float32, y [B] int64) gathered by index from device tensors.

    The whole split lives on the device once; an epoch is a permutation and one gather per
    batch, so there is no per-sample Python work in the hot path. The order of epoch e is a
    function of (seed, e) only, which makes resumed and repeated runs see the same batches.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, seed=0):
        import paddle
        self.x = paddle.to_tensor(self._prepare(images))
        self.y = paddle.to_tensor(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self.rank, self.world, self.pad = 0, 1, False

    @staticmethod
    def _prepare(images):
        return pixels(images)

    def shard(self, rank, world, pad):
        """Yield only rank `rank`'s part of every batch, for a run of `world` processes.

        `batch_size` stays global: each batch of the epoch's order is cut into `world`
        contiguous parts, so the ranks together see exactly the batches of a one-process run.
        pad=True (training) completes a short last batch with samples from the start of the
        order until it divides evenly: DataParallel averages the ranks' gradients, which is
        the batch mean only for equal parts, and every rank must take the same number of
        steps. pad=False (evaluation) keeps each sample exactly once; the parts of a short
        last batch then differ by at most one, and a rank may get none of it.
        """
        if pad:
            check_batch_split(self.batch_size, world)
        self.rank, self.world, self.pad = rank, world, pad
        return self

    def _local_order(self, order):
        """This rank's sample indices [n_local] for an epoch order [n], and its batch sizes."""
        parts = []
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            if self.world > 1:
                if self.pad and len(chunk) % self.world:
                    extra = np.resize(order, self.world - len(chunk) % self.world)
                    chunk = np.concatenate([chunk, extra])
                chunk = np.array_split(chunk, self.world)[self.rank]
            if len(chunk):
                parts.append(chunk)
        if not parts:
            return np.zeros(0, dtype=np.int64), []
        return np.concatenate(parts), [len(p) for p in parts]

    def __len__(self):
        """# batches this rank takes per epoch."""
        return len(self._local_order(np.arange(self.num_samples))[1])

    @property
    def num_samples(self):
        """Size of the whole set, over all ranks."""
        return len(self.y)

    @property
    def local_samples(self):
        """# samples this rank takes per epoch (padding included)."""
        return len(self._local_order(np.arange(self.num_samples))[0])

    def set_epoch(self, epoch):
        self.epoch = epoch

    def digit_centres(self, idx):
        """Where the digits of samples idx [B] sit: their 28x28 boxes' centres [B, 2] float32,
        (column, row) in pixels of the image, (0, 0) its top-left corner. Plain MNIST digits
        fill the image."""
        import paddle
        H, W = self.x.shape[2], self.x.shape[3]
        return paddle.to_tensor([[W / 2, H / 2]], dtype="float32").expand([idx.shape[0], 2])

    def _batch(self, idx):
        """idx: int64 [B] sample indices -> (x [B, C, H, W], y [B])."""
        import paddle
        return paddle.gather(self.x, idx), paddle.gather(self.y, idx)

    def __iter__(self):
        return self.iterate()

    def iterate(self, first=0, with_index=False):
        """The epoch's batches from batch `first` on (resuming an interrupted epoch): the same
        batches as a whole pass yields from there. with_index: (idx [B], x, y), idx the
        samples' positions in the set, which evaluation's random draws are keyed on."""
        import paddle
        n = self.num_samples
        order = np.arange(n)
        if self.shuffle:
            order = np.random.RandomState([self.seed, self.epoch]).permutation(n)
        order, sizes = self._local_order(order)
        if not sizes:
            return
        order = paddle.to_tensor(order)
        start = 0
        for j, size in enumerate(sizes):
            if j >= first:
                idx = order[start:start + size]
                yield (idx, *self._batch(idx)) if with_index else self._batch(idx)
            start += size


class CanvasLoader(TensorLoader):
    """Translated (clutter=0) or cluttered MNIST on a canvas x canvas image, built per batch.

    Every sample has a row of placement parameters: the digit's top-left corner, and for each
    clutter piece its source digit, the corner of the 8x8 crop in it and where it is pasted.
    A batch is composed on the device by one scatter-max of all pieces into a blank canvas.
    With `fixed_seed` the parameters never change (evaluation sets); otherwise they are drawn
    again for every epoch from (seed, epoch).
    """

    def __init__(self, images, labels, batch_size, canvas, clutter=0, shuffle=False, seed=0,
                 fixed_seed=None):
        import paddle
        n, h, w = images.shape
        super().__init__(images, labels, batch_size, shuffle, seed)
        self.canvas, self.clutter, self.fixed_seed, self.digit = canvas, clutter, fixed_seed, h
        r, c = np.divmod(np.arange(h * h), h)
        pr, pc = np.divmod(np.arange(PIECE * PIECE), PIECE)
        # Flat offsets of a digit / a piece from its corner, on the canvas and in a source digit.
        self.digit_on_canvas = paddle.to_tensor(r * canvas + c)
        self.piece_on_canvas = paddle.to_tensor(pr * canvas + pc)
        self.piece_in_digit = paddle.to_tensor(pr * h + pc)
        self.params = self._draw(fixed_seed) if fixed_seed is not None else None

    @staticmethod
    def _prepare(images):
        return pixels(images).reshape(len(images), -1)                      # [N, h*w]

    def _draw(self, seed):
        """Placement parameters [N, 2 + 5 * clutter] int64 for every sample, from `seed`."""
        import paddle
        rng = np.random.RandomState(seed)
        n, K, free, crop = self.num_samples, self.clutter, self.canvas - self.digit, self.digit - PIECE
        corner = rng.randint(0, free + 1, size=(n, 2))                       # digit row, col
        # Clutter comes from other digits: a non-zero shift of the sample's own index.
        source = (np.arange(n)[:, None] + rng.randint(1, max(n, 2), size=(n, K))) % n
        crop_at = rng.randint(0, crop + 1, size=(n, K, 2))
        paste_at = rng.randint(0, self.canvas - PIECE + 1, size=(n, K, 2))
        cols = [corner, source, crop_at.reshape(n, -1), paste_at.reshape(n, -1)]
        return paddle.to_tensor(np.concatenate(cols, axis=1).astype(np.int64))

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        if self.fixed_seed is None:
            self.params = None  # drawn lazily, once per epoch

    def _placements(self, idx):
        """The rows idx [B] of the placement parameters of the current epoch."""
        import paddle
        if self.params is None:
            # Its own stream: drawn from (seed, epoch) alone it would repeat the shuffle's.
            self.params = self._draw([self.seed, self.epoch, 1])
        return paddle.gather(self.params, idx)                                # [B, 2 + 5K]

    def digit_centres(self, idx):
        """The centres [B, 2] (column, row) of the digits' 28x28 boxes on the canvas."""
        corner = self._placements(idx)[:, :2].astype("float32")              # row, col
        return corner.flip(axis=[1]) + self.digit / 2

    def _batch(self, idx):
        import paddle
        p = self._placements(idx)                                             # [B, 2 + 5K]
        B, K, N = idx.shape[0], self.clutter, self.canvas
        where = [(p[:, 0] * N + p[:, 1]).unsqueeze(1) + self.digit_on_canvas]  # [B, h*h]
        pixels = [paddle.gather(self.x, idx)]                                 # [B, h*h]
        if K:
            source = p[:, 2:2 + K]                                            # [B, K]
            crop = p[:, 2 + K:2 + 3 * K].reshape([B, K, 2])
            paste = p[:, 2 + 3 * K:].reshape([B, K, 2])
            src = paddle.gather(self.x, source.flatten()).reshape([B, K, -1])  # [B, K, h*h]
            in_src = ((crop[:, :, 0] * self.digit + crop[:, :, 1]).unsqueeze(2)
                      + self.piece_in_digit)                                  # [B, K, 64]
            pixels.append(paddle.take_along_axis(src, in_src, axis=2, broadcast=False)
                          .reshape([B, -1]))
            where.append(((paste[:, :, 0] * N + paste[:, :, 1]).unsqueeze(2)
                          + self.piece_on_canvas).reshape([B, -1]))
        blank = paddle.zeros([B, N * N], dtype=self.x.dtype)
        canvas = paddle.put_along_axis(blank, paddle.concat(where, 1), paddle.concat(pixels, 1),
                                       axis=1, reduce="amax", broadcast=False)
        return canvas.reshape([B, 1, N, N]), paddle.gather(self.y, idx)


def make_loader(images, labels, batch_size, dataset="mnist", canvas=60, clutter=None,
                shuffle=False, seed=0, fixed_seed=None):
    """A TensorLoader (mnist) or CanvasLoader (translated, cluttered)."""
    canvas, clutter = settle_canvas(dataset, canvas, clutter)
    if dataset == "mnist":
        return TensorLoader(images, labels, batch_size, shuffle, seed)
    return CanvasLoader(images, labels, batch_size, canvas, clutter, shuffle, seed, fixed_seed)


def split_indices(n, valid_size, seed):
    """The reference's split: the first floor(valid_size * n) of a seeded permutation validate."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    split = int(np.floor(valid_size * n))
    return indices[split:], indices[:split]


def get_train_valid_loader(data_dir, batch_size, random_seed, valid_size=0.1, dataset="mnist",
                           canvas=60, clutter=None):
    """Train and validation loaders over the MNIST training split: the training loader
    shuffles every epoch (and draws fresh canvases), the validation set is fixed."""
    images, labels = load_mnist(data_dir, "train")
    train_idx, valid_idx = split_indices(len(labels), valid_size, random_seed)
    train = make_loader(images[train_idx], labels[train_idx], batch_size, dataset, canvas,
                        clutter, shuffle=True, seed=random_seed)
    valid = make_loader(images[valid_idx], labels[valid_idx], batch_size, dataset, canvas,
                        clutter, fixed_seed=VALID_SEED)
    return train, valid


def validation_loader(config, data_dir, batch_size):
    """The validation split a checkpoint was trained against, given the config
    checkpoint.load_model returns for it (its stored seed and split size)."""
    _, loader = get_train_valid_loader(
        data_dir, batch_size, config.random_seed, config.valid_size, dataset=config.dataset,
        canvas=config.canvas, clutter=config.clutter)
    return loader


def get_test_loader(data_dir, batch_size, dataset="mnist", canvas=60, clutter=None):
    images, labels = load_mnist(data_dir, "test")
    return make_loader(images, labels, batch_size, dataset, canvas, clutter, fixed_seed=TEST_SEED)
