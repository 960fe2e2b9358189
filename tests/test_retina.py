"""The glimpse sensor (modules.Retina): exact pixel values on synthetic images.

Spec: the centre is c = floor(0.5 * (l + 1) * W) for the column (l[:, 0]) and with H for the
row (l[:, 1]); patch i has side g * s**i and covers [c - size//2, c - size//2 + size) on each
axis, zeros outside the image; patch i > 0 is average-pooled by size // g to g x g; patches
are concatenated patch-major, then channel, and flattened to [B, k * C * g * g].
"""
import numpy as np
import paddle
import pytest

from conftest import naive_glimpse, naive_glimpses, naive_patches
from modules import Retina


def arange_image(H, W, C=1, B=1, offset=0.0):
    """[B, C, H, W] float32 with pixel (r, c) of image b, channel ch = b*C*H*W + ch*H*W + r*W + c."""
    return (np.arange(B * C * H * W, dtype=np.float32) + offset).reshape(B, C, H, W)


def foveate(x, l, g, k, s):
    retina = Retina(g, k, s)
    out = retina.foveate(retina.scene(paddle.to_tensor(np.asarray(x, dtype=np.float32))),
                         paddle.to_tensor(np.asarray(l, dtype=np.float32)))
    return out.numpy()


# ------------------------------------------------------------------ hand-computed literals
# (H, W, g, k, s, l, expected phi); values worked out by hand on the arange image
# (pixel value = row * W + col) and checked against the naive implementation below.
LITERALS = [
    # 8 x 8, one 2x2 patch
    (8, 8, 2, 1, 2, (0.0, 0.0), [27, 28, 35, 36]),            # centre: rows/cols 3..4
    (8, 8, 2, 1, 2, (-1.0, -1.0), [0, 0, 0, 0]),              # top-left corner, c = 0
    (8, 8, 2, 1, 2, (1.0, 1.0), [63, 0, 0, 0]),               # bottom-right, c = 8
    (8, 8, 2, 1, 2, (-1.0, 1.0), [0, 56, 0, 0]),              # bottom-left (x=-1, y=+1)
    (8, 8, 2, 1, 2, (1.0, -1.0), [0, 0, 7, 0]),               # top-right
    (8, 8, 2, 1, 2, (0.0, -1.0), [0, 0, 3, 4]),               # top edge
    (8, 8, 2, 1, 2, (-1.0, 0.0), [0, 24, 0, 32]),             # left edge
    (8, 8, 2, 1, 2, (1.0, 0.0), [31, 0, 39, 0]),              # right edge
    # 8 x 8, three scales
    (8, 8, 2, 3, 2, (0.0, 0.0),
     [27, 28, 35, 36, 22.5, 24.5, 38.5, 40.5, 13.5, 17.5, 45.5, 49.5]),
    (8, 8, 2, 3, 2, (-1.0, -1.0),
     [0, 0, 0, 0, 0, 0, 0, 4.5, 0, 0, 0, 13.5]),
    (8, 8, 2, 2, 2, (1.0, 1.0), [63, 0, 0, 0, 58.5, 0, 0, 0]),
    # blocks partly outside the image average their zeros in (divide by the full block)
    (8, 8, 2, 2, 2, (-0.75, -0.75), [0, 1, 8, 9, 0, 0.75, 6, 13.5]),
    # 6 x 10 (non-square): columns use W = 10, rows H = 6
    (6, 10, 2, 1, 2, (0.0, 0.0), [24, 25, 34, 35]),
    (6, 10, 2, 1, 2, (1.0, -1.0), [0, 0, 9, 0]),
    (6, 10, 2, 1, 2, (-1.0, 1.0), [0, 50, 0, 0]),
    (6, 10, 2, 1, 2, (0.5, 0.5), [36, 37, 46, 47]),
    (6, 10, 2, 3, 2, (0.0, 0.0),
     [24, 25, 34, 35, 18.5, 20.5, 38.5, 40.5, 9.375, 12.375, 31.875, 34.875]),
    # 12 x 12, g = 3 (odd: the patch is c-1 .. c+1), two scales
    (12, 12, 3, 1, 2, (0.0, 0.0), [65, 66, 67, 77, 78, 79, 89, 90, 91]),
]


@pytest.mark.parametrize("H,W,g,k,s,loc,expected", LITERALS)
def test_literal_values(H, W, g, k, s, loc, expected):
    x = arange_image(H, W)
    phi = foveate(x, [loc], g, k, s)
    assert phi.shape == (1, k * g * g)
    np.testing.assert_allclose(phi[0], np.asarray(expected, dtype=np.float64), rtol=0, atol=1e-5)
    # The literal also pins down the naive implementation used by the other tests.
    np.testing.assert_allclose(naive_glimpse(x[0], loc, g, k, s), expected, rtol=0, atol=1e-12)


def test_centre_patch_of_8x8_is_27_28_35_36():
    phi = foveate(arange_image(8, 8), [[0.0, 0.0]], g=2, k=1, s=2)
    assert phi.reshape(2, 2).tolist() == [[27.0, 28.0], [35.0, 36.0]]


# ------------------------------------------------------------------ against the naive version
LOCS = [(0.0, 0.0), (-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (0.0, -1.0), (1.0, 0.0),
        (0.3, -0.6), (-0.99, 0.99), (0.51, 0.26)]


@pytest.mark.parametrize("H,W", [(8, 8), (12, 12), (6, 10)])
@pytest.mark.parametrize("g,k,s", [(2, 1, 2), (2, 3, 2), (4, 3, 2), (3, 2, 2), (2, 2, 3)])
def test_matches_naive_on_arange(H, W, g, k, s):
    x = arange_image(H, W, B=len(LOCS))          # every sample its own image
    l = np.asarray(LOCS, dtype=np.float32)
    phi = foveate(x, l, g, k, s)
    assert phi.shape == (len(LOCS), k * g * g)
    np.testing.assert_allclose(phi, naive_glimpses(x, l, g, k, s), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("g", [8, 7])
def test_sharp_patch_at_the_edges_of_28x28(g):
    """The reference configuration's patch (and an odd side) reaches g//2 and g - g//2 pixels
    past the image at the corners: every pixel of the padding must read zero."""
    x = arange_image(28, 28, B=len(LOCS), offset=1.0)  # no pixel of the image is zero
    l = np.asarray(LOCS, dtype=np.float32)
    np.testing.assert_array_equal(foveate(x, l, g, 1, 2), naive_glimpses(x, l, g, 1, 2))


def test_two_channels_patch_major_then_channel():
    H = W = 8
    x = np.concatenate([arange_image(H, W), -arange_image(H, W)], axis=1)   # [1, 2, 8, 8]
    phi = foveate(x, [[0.0, 0.0]], g=2, k=2, s=2)
    assert phi.shape == (1, 2 * 2 * 2 * 2)
    expected = [27, 28, 35, 36, -27, -28, -35, -36,              # patch 0: channel 0, 1
                22.5, 24.5, 38.5, 40.5, -22.5, -24.5, -38.5, -40.5]  # patch 1: channel 0, 1
    np.testing.assert_allclose(phi[0], expected, atol=1e-5)
    np.testing.assert_allclose(phi[0], naive_glimpse(x[0], (0.0, 0.0), 2, 2, 2), atol=1e-5)


def test_two_channels_random_against_naive():
    rng = np.random.RandomState(5)
    x = rng.randn(6, 2, 9, 13).astype(np.float32)
    l = rng.uniform(-1, 1, size=(6, 2)).astype(np.float32)
    np.testing.assert_allclose(foveate(x, l, 2, 3, 2), naive_glimpses(x, l, 2, 3, 2),
                               rtol=1e-5, atol=1e-5)


def test_batch_of_arange_images_at_one_location():
    """Each sample reads its own image: sample b's centre patch is sample 0's plus b*64."""
    x = arange_image(8, 8, B=3)
    phi = foveate(x, np.zeros((3, 2)), g=2, k=1, s=2)
    np.testing.assert_allclose(phi, [[27, 28, 35, 36], [91, 92, 99, 100], [155, 156, 163, 164]])


# ------------------------------------------------------------------ batched == per-sample loop
@pytest.mark.parametrize("H,W", [(20, 20), (17, 23)])
def test_batched_equals_per_sample_loop(H, W):
    rng = np.random.RandomState(H * 100 + W)
    B, g, k, s = 16, 4, 3, 2
    x = rng.randn(B, 1, H, W).astype(np.float32)
    l = rng.uniform(-1, 1, size=(B, 2)).astype(np.float32)
    l[:4] = [[-1, -1], [1, 1], [-1, 1], [1, -1]]                 # include the corners
    batched = foveate(x, l, g, k, s)
    assert batched.shape == (B, k * g * g)
    loop_paddle = np.concatenate([foveate(x[b:b + 1], l[b:b + 1], g, k, s) for b in range(B)])
    np.testing.assert_array_equal(batched, loop_paddle)
    np.testing.assert_allclose(batched, naive_glimpses(x, l, g, k, s), rtol=1e-5, atol=1e-5)
    # Not vacuous: different locations give different glimpses.
    assert not np.allclose(batched[4], batched[5])


def test_sizes_and_dtype():
    r = Retina(4, 3, 2)
    assert r.sizes == [4, 8, 16]
    out = r.foveate(r.scene(paddle.zeros([2, 1, 10, 10])), paddle.zeros([2, 2]))
    assert out.dtype == paddle.float32 and list(out.shape) == [2, 48]


def test_pooled_scales_equal_avg_pooling_the_full_patch_and_survive_new_images():
    """The summed-area-table path for pooled scales equals cutting the full-resolution
    patches and avg-pooling them (float32 rounding apart), including when the same Retina
    sees a new batch of images and then the first one again (each its own scene)."""
    rng = np.random.RandomState(3)
    retina = Retina(6, 4, 2)  # patches 6, 12, 24, 48 on a 50 x 70 image
    batches = [paddle.to_tensor(rng.randn(5, 2, 50, 70).astype(np.float32)) for _ in range(2)]
    l = paddle.to_tensor(rng.uniform(-1.1, 1.1, (5, 2)).clip(-1, 1).astype(np.float32))
    for x in (batches[0], batches[1], batches[0]):
        phi = retina.foveate(retina.scene(x), l).numpy().reshape(5, 4, 2, 6, 6)
        full = naive_patches(x.numpy(), l.numpy(), 6, 4, 2)
        for i, patch in enumerate(full):
            f = patch.shape[-1] // 6
            pooled = patch.reshape(5, 2, 6, f, 6, f).mean(axis=(3, 5))
            np.testing.assert_allclose(phi[:, i], pooled, rtol=0, atol=2e-6)


# ------------------------------------------------------------------ normalising sensor
MNIST_NORM = (0.1307, 0.3081)


def normalised(x):
    """What the reference feeds its retina: (p / 255 - mean) / std, in float64."""
    return (np.asarray(x, dtype=np.float64) / 255.0 - MNIST_NORM[0]) / MNIST_NORM[1]


@pytest.mark.parametrize("H,W,g,k,s", [(28, 28, 8, 1, 2), (60, 60, 12, 3, 2),
                                       (100, 100, 12, 4, 2), (17, 23, 3, 3, 3)])
def test_normalising_retina_equals_the_naive_glimpse_of_the_normalised_image(H, W, g, k, s):
    """With normalize the sensor reads intensities 0..255 and sees the normalised image, zero
    outside it: pooling first and normalising after (over the in-image part of each block)
    equals normalising first, to float32 rounding, at the edges and corners too."""
    rng = np.random.RandomState(H + k)
    B = 12
    x = rng.randint(0, 256, size=(B, 1, H, W)).astype(np.float32)
    l = rng.uniform(-1, 1, size=(B, 2)).astype(np.float32)
    l[:4] = [[-1, -1], [1, 1], [-1, 1], [1, -1]]
    retina = Retina(g, k, s, normalize=MNIST_NORM)
    phi = retina.foveate(retina.scene(paddle.to_tensor(x)), paddle.to_tensor(l)).numpy()
    np.testing.assert_allclose(phi, naive_glimpses(normalised(x), l, g, k, s), rtol=0, atol=2e-6)


def test_summed_area_table_is_exact_in_float32_for_pixel_intensities():
    """The table of a 100x100 canvas of 8-bit intensities is float32 and holds the exact
    integer sums (largest 255 * 10000 < 2**24); the same sensor without normalize keeps a
    float64 table for arbitrary inputs."""
    x = np.full((2, 1, 100, 100), 255, dtype=np.float32)
    table = Retina(12, 4, 2, normalize=MNIST_NORM)._summed_area_table(paddle.to_tensor(x))
    assert table.dtype == paddle.float32
    expected = np.cumsum(np.cumsum(x.astype(np.int64), axis=2), axis=3).reshape(2, 1, -1)
    np.testing.assert_array_equal(table.numpy().astype(np.int64), expected)
    assert Retina(12, 4, 2)._summed_area_table(paddle.to_tensor(x)).dtype == paddle.float64
