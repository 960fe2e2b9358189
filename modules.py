"""The building blocks of the Recurrent Attention Model (Mnih et al., 2014).

Five parts plus the REINFORCE baseline:

    Retina           x, l_{t-1}       -> phi          (the glimpse sensor, no parameters)
    GlimpseNetwork   x, l_{t-1}       -> g_t          (sensor + "what" and "where" layers)
    CoreNetwork      g_t, h_{t-1}     -> h_t          (a ReLU RNN, or an LSTM)
    LocationNetwork  h_t              -> l_t, log_pi  (Gaussian policy over the next fixation)
    ActionNetwork    h_t              -> log p(y)     (linear softmax classifier)
    BaselineNetwork  h_t              -> b_t          (value estimate that reduces variance)

Shapes use B for the batch, C channels, H x W pixels (Paddle is NCHW), k patches of g x g.
Locations are in [-1, 1]: l[:, 0] is the column (x), l[:, 1] the row (y); (-1, -1) is the
top-left corner of the image. Parameter names and shapes match the reference checkpoint
(`sensor.fc1..fc4`, `rnn.i2h/h2h`, `locator.fc/fc_lt`, `classifier.fc`, `baseliner.fc`).
"""
import math
from typing import NamedTuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class Scene(NamedTuple):
    """What the retina reads a batch of images x [B, C, H, W] through (Retina.scene)."""
    x: paddle.Tensor          # [B, C, H, W] the images
    flat: paddle.Tensor       # [B, C*L] the normalised images, zero-padded and flattened
    weights: paddle.Tensor    # [2, g*g] centre (col, row) -> flat index of each patch pixel,
    offsets: paddle.Tensor    # [g*g]    as offsets + centre @ weights
    table: paddle.Tensor      # [B, C, H*W] summed-area table of x (None with one patch)


class Retina:
    """The glimpse sensor rho(x, l): k nested square patches centred on l.

    Patch i has side g * s**i pixels and is average-pooled back to g x g, so the first patch
    is sharp and later ones see more context at lower resolution; pixels outside the image
    read as zero. With normalize=(mean, std) the images hold pixel intensities 0..255 and the
    sensor sees them as the reference's data pipeline normalises them, (p / 255 - mean) / std,
    zero outside the image; without, it sees x as it is. The whole batch is served by gathers
    on device tensors (no per-sample loop, no host copy), so the same code runs on a GPU.

    An episode glimpses the same images T times: `scene(x)` does the per-image work once (the
    padded image the sharp patches are gathered from, the summed-area table the pooled ones
    are read from) and `foveate(scene, l)` reads one glimpse from it.
    """

    def __init__(self, g, k, s, normalize=None):
        self.g, self.k, self.s = int(g), int(k), int(s)
        self.sizes = [self.g * self.s ** i for i in range(self.k)]
        self.normalize = normalize
        self._pool_consts = {}

    @staticmethod
    def denormalize(size, coords):
        """Map coords in [-1, 1] to integer pixel indices in [0, size]: floor((c + 1) * size / 2).

        `size` may be a tensor [2] of (W, H) for coords [B, 2]. The operation order matches
        the reference so that float rounding agrees bit for bit.
        """
        return Retina.pixel_floor(size, coords).astype("int64")

    @staticmethod
    def pixel_floor(size, coords):
        """denormalize, before the cast: integer-valued floats of coords' dtype. A NaN
        coordinate (weights that diverged) reads as the centre instead of indexing out of
        the image; training reports the divergence through its loss."""
        return paddle.floor(0.5 * ((paddle.nan_to_num(coords) + 1.0) * size))

    @staticmethod
    def _size(x, dtype):
        """(W, H) of x [B, C, H, W] as a tensor [2]."""
        return paddle.to_tensor([x.shape[3], x.shape[2]], dtype=dtype)

    def centre(self, x, l):
        """Pixel (col, row) [B, 2] int64 that the glimpse at l [B, 2] centres on, in x's frame."""
        return self.denormalize(self._size(x, l.dtype), l)

    def scene(self, x):
        """The per-image work of all glimpses at images x [B, C, H, W]: a Scene."""
        flat, weights, offsets = self._padded_image(x)
        table = self._summed_area_table(x) if self.k > 1 else None
        return Scene(x, flat, weights, offsets, table)

    def foveate(self, scene, l):
        """Args: scene (of images [B, C, H, W]), l [B, 2]. Returns phi [B, k * C * g * g],
        patch-major then channel.

        The sharp patch is gathered pixel by pixel from the (normalised) padded image
        (_sharp_patch). A pooled patch (side g * f, f = s**i) is read from a summed-area table
        of the raw pixels instead: each of its g x g cells is the sum of an f x f block, 4
        table look-ups whatever f is, so wide glimpses cost no more than narrow ones, and
        normalising after pooling is exact because normalising is affine.
        """
        B = scene.x.shape[0]
        sharp = self._sharp_patch(scene, l)                                      # [B, C*g*g]
        if self.k == 1:
            return sharp
        pooled = self._pooled_patches(scene, self.centre(scene.x, l))
        return paddle.concat([sharp, pooled.reshape([B, -1])], axis=1)

    def _pixels(self, x):
        """What the sensor sees of x: (x / 255 - mean) / std with normalize, else x."""
        if self.normalize is None:
            return x
        mean, std = self.normalize
        return (x / 255.0 - mean) / std

    def _padded_image(self, x):
        """_pixels(x) zero-padded and flattened to [B, C*L], each channel laid out as `lead`
        zeros, then the H rows at stride Wp = W + r, each followed by r zeros, then r*Wp zeros,
        where r = g - g//2 >= g//2 is the patch's reach past its centre. Reading row i, col j
        at lead + i*Wp + j, a column left of the image lands in the previous row's zeros and
        one right of it in the row's own, so one gap per row pads both sides (less to copy
        than a frame of g on every side). Also the GEMM [2, g*g] and constant [g*g] that
        turn a centre (col, row) into the flat index of each sharp-patch pixel."""
        B, C, H, W = x.shape
        g = self.g
        r = g - g // 2
        Wp, lead = W + r, (g // 2) * (W + r + 1)
        # Patch pixel (i, j) sits at lead + (row - g//2 + i) * Wp + (col - g//2 + j),
        # which is (row * Wp + col) + i * Wp + j: lead is g//2 rows and columns.
        offsets = [i * Wp + j for i in range(g) for j in range(g)]
        gap = paddle.zeros([B * C * H, r], dtype=x.dtype)
        top = paddle.zeros([B * C, lead], dtype=x.dtype)
        bottom = paddle.zeros([B * C, r * Wp], dtype=x.dtype)
        weights = paddle.to_tensor([[1.0] * g * g, [float(Wp)] * g * g], dtype=x.dtype)
        # Concats: Paddle's CPU pad kernel is several times slower.
        rows = paddle.concat([self._pixels(x).reshape([B * C * H, W]), gap], axis=1)
        flat = paddle.concat([top, rows.reshape([B * C, H * Wp]), bottom], axis=1)
        return flat.reshape([B, -1]), weights, paddle.to_tensor(offsets, dtype=x.dtype)

    def _sharp_patch(self, scene, l):
        """The g x g patch around l [B, 2] as [B, C*g*g] (channel, row, col), zeros outside
        the image: one gather from the padded image, no clamping or masking. A centre lies in
        [0, size] (l is clipped to [-1, 1]), so the patch stays inside the padding.

        The flat index of patch pixel (i, j), (row + i) * Wp + col + j (see _padded_image), is
        one small GEMM on the floored centre: float32 holds these integers exactly.
        (An int64 broadcast add of row and pixel offsets costs several times more.)
        """
        B, C, H, W = scene.x.shape
        g = self.g
        c = self.pixel_floor(self._size(scene.x, l.dtype), l)               # [B, 2] (col, row)
        idx = addmm(scene.offsets, c, scene.weights).astype("int64")      # [B, g*g]
        if C == 1:
            return paddle.take_along_axis(scene.flat, idx, axis=1, broadcast=False)
        idx = idx.unsqueeze(1).expand([B, C, g * g])                             # [B, C, g*g]
        flat = scene.flat.reshape([B, C, -1])
        return paddle.take_along_axis(flat, idx, axis=2, broadcast=False).reshape([B, -1])

    def _summed_area_table(self, x):
        """[B, C, H*W], entry (r, c) = sum of x[:, :, :r+1, :c+1], exact: in x's float32 when
        x holds pixel intensities (normalize) whose sums stay below 2**24 (canvases up to
        256 x 256), where float32 adds integers exactly; otherwise in float64."""
        B, C, H, W = x.shape
        exact = self.normalize is not None and H * W * 255 < 2 ** 24
        table = x.astype(x.dtype if exact else "float64").cumsum(axis=2).cumsum(axis=3)
        return table.reshape([B, C, H * W])

    def _pooling_constants(self, dtype):
        """Block edges [k-1, g+1] int64 relative to the centre, for each pooled patch, and the
        difference matrices in `dtype`: D [g, g+1] with (D @ v)[i] = v[i+1] - v[i], and
        E [k-1, g+1, g], D transposed and divided by each patch's block area."""
        if dtype not in self._pool_consts:
            g, sizes = self.g, self.sizes[1:]
            blocks = paddle.to_tensor([[size // g] for size in sizes], dtype="int64")
            halves = paddle.to_tensor([[size // 2] for size in sizes], dtype="int64")
            edges = blocks * paddle.arange(g + 1, dtype="int64") - halves        # [k-1, g+1]
            eye = paddle.eye(g + 1, dtype=dtype)
            D = eye[1:] - eye[:-1]                                               # [g, g+1]
            E = D.t().unsqueeze(0) / (blocks.astype(dtype) ** 2).unsqueeze(2)
            self._pool_consts[dtype] = edges, D, E
        return self._pool_consts[dtype]

    def _pooled_patches(self, scene, c):
        """Patches 1..k-1 around centres c [B, 2], average-pooled: [B, k-1, C, g, g]."""
        x, table = scene.x, scene.table                                          # [B, C, H*W]
        B, C, H, W = x.shape
        g = self.g
        edges, D, E = self._pooling_constants(table.dtype)
        # Block edges clamped to the image; the sum over rows [0, e) is table row e - 1, and
        # an edge at 0 sums nothing (read entry 0, then zero it).
        edges = c.unsqueeze(2).unsqueeze(3) + edges                              # [B, 2, k-1, g+1]
        cols, rows = edges[:, 0].clip(0, W), edges[:, 1].clip(0, H)              # [B, k-1, g+1]
        keep = (rows.unsqueeze(3) > 0) & (cols.unsqueeze(2) > 0)                 # [B, k-1, g+1, g+1]
        idx = (rows - 1).clip(min=0).unsqueeze(3) * W + (cols - 1).clip(min=0).unsqueeze(2)
        idx = idx.reshape([B, 1, -1])
        if C > 1:
            idx = idx.expand([B, C, idx.shape[2]])
        corners = paddle.take_along_axis(table, idx, axis=2, broadcast=False)
        corners = corners * keep.reshape([B, 1, -1]).astype(table.dtype)
        corners = corners.reshape([B, C, self.k - 1, g + 1, g + 1])
        # Block mean = difference of neighbouring corners along rows, then along columns,
        # over the area. Written as products with D and E, on contiguous data: the same
        # arithmetic as slicing and subtracting (exactly so when areas are powers of 2), but
        # Paddle's CPU kernels are ~40x slower on strided slices.
        pooled = paddle.matmul(paddle.matmul(D, corners), E)                    # [B, C, k-1, g, g]
        if self.normalize is not None:
            # The mean of the normalised block, zeros outside the image: of its pixels, the
            # fraction n / area = (row span)(column span) / area lies inside, each normalised,
            # so the mean is (mean of p - 255 * mean * n / area) / (255 * std).
            mean, std = self.normalize
            rows, cols = rows.astype(table.dtype), cols.astype(table.dtype)
            inside = paddle.matmul(D, rows.unsqueeze(3)) * paddle.matmul(cols.unsqueeze(2), E)
            pooled = (pooled - (255.0 * mean) * inside.unsqueeze(1)) * (1.0 / (255.0 * std))
        pooled = pooled.astype(x.dtype)
        return pooled.transpose([0, 2, 1, 3, 4]) if C > 1 else pooled.reshape([B, -1, 1, g, g])


def addmm(input, x, weight):
    """input + x @ weight: one GEMM op in dygraph (training's speed); a matmul and an add in a
    static graph (paddle.jit.save for inference), which ONNX converters know (paddle2onnx 2.1
    has no addmm)."""
    if paddle.in_dynamic_mode():
        return paddle.addmm(input, x, weight)
    return paddle.matmul(x, weight) + input


def linear_sum(*pairs):
    """sum_i layer_i(x_i) over pairs (nn.Linear layer_i, x_i [B, in_i]) -> [B, out].

    nn.Linear's math as chained addmm GEMMs, x_n W_n + (... + (x_1 W_1 + (b_1 + ... + b_n))):
    each bias add, and the row sum of its gradient, happens inside a GEMM op instead of as
    separate eager ops, which is much of what this model's small steps cost on the CPU. Same
    parameters, so checkpoints are unchanged; results match nn.Linear to float rounding.
    """
    bias = pairs[0][0].bias
    for layer, _ in pairs[1:]:
        bias = bias + layer.bias
    out = bias
    for layer, x in pairs:
        out = addmm(out, x, layer.weight)
    return out


class GlimpseNetwork(nn.Layer):
    """g_t = relu(fc3(relu(fc1(phi))) + fc4(relu(fc2(l_{t-1})))): "what" plus "where".

    Args: h_g, h_l hidden sizes of the phi and location layers; g, k, s, normalize retina
    parameters; c image channels. forward(scene, l_t_prev [B, 2]) -> g_t [B, h_g + h_l], the
    scene of images x [B, C, H, W] from self.retina.scene(x).
    """

    def __init__(self, h_g, h_l, g, k, s, c, normalize=None):
        super().__init__()
        self.retina = Retina(g, k, s, normalize)
        self.fc1 = nn.Linear(k * g * g * c, h_g)
        self.fc2 = nn.Linear(2, h_l)
        self.fc3 = nn.Linear(h_g, h_g + h_l)
        self.fc4 = nn.Linear(h_l, h_g + h_l)

    def forward(self, scene, l_t_prev):
        phi = self.retina.foveate(scene, l_t_prev)
        what = F.relu(linear_sum((self.fc1, phi)))
        where = F.relu(linear_sum((self.fc2, l_t_prev)))
        return F.relu(linear_sum((self.fc3, what), (self.fc4, where)))


class CoreNetwork(nn.Layer):
    """The core network f_h: h_t = f_h(h_{t-1}, g_t), carrying a state [B, state_size].

    kind "rnn" (the paper's, the reference's): h_t = relu(i2h(g_t) + h2h(h_{t-1})); the state
    is h_t. "irnn": the same with h2h initialised to the identity and a zero bias (Le et
    al., 2015), so that h_t starts by accumulating the glimpses. "lstm": i, f, o, c~ =
    split(i2h(g_t) + h2h(h_{t-1})), c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(c~), h_t =
    sigmoid(o) tanh(c_t); the state is [h_t, c_t] side by side, [B, 2 * hidden].
    forward(g_t [B, in], state_prev [B, state_size]) -> state_t; hidden(state) -> h_t [B, hid].
    """

    KINDS = ("rnn", "irnn", "lstm")

    def __init__(self, input_size, hidden_size, kind="rnn"):
        super().__init__()
        self.kind, self.hidden_size = kind, hidden_size
        gates = 4 if kind == "lstm" else 1
        self.state_size = 2 * hidden_size if kind == "lstm" else hidden_size
        self.i2h = nn.Linear(input_size, gates * hidden_size)
        self.h2h = nn.Linear(hidden_size, gates * hidden_size)
        if kind == "irnn":
            self.h2h.weight.set_value(paddle.eye(hidden_size, dtype=self.h2h.weight.dtype))
            self.h2h.bias.set_value(paddle.zeros([hidden_size], dtype=self.h2h.bias.dtype))

    def hidden(self, state):
        return state[:, :self.hidden_size] if self.kind == "lstm" else state

    def forward(self, g_t, state_prev):
        h_prev = self.hidden(state_prev)
        pre = linear_sum((self.i2h, g_t), (self.h2h, h_prev))
        if self.kind != "lstm":
            return F.relu(pre)
        i, f, o, c_new = paddle.chunk(pre, 4, axis=1)
        c_t = F.sigmoid(f) * state_prev[:, self.hidden_size:] + F.sigmoid(i) * paddle.tanh(c_new)
        return paddle.concat([F.sigmoid(o) * paddle.tanh(c_t), c_t], axis=1)


def gaussian_log_pi(dev, std):
    """log N(l; mu, std^2 I) of 2-D samples from dev = l - mu [N, 2] -> [N]:
    -|dev|^2 / (2 std^2) - 2 log std - log 2 pi (the policy's log-probability)."""
    return paddle.scale((dev * dev).sum(axis=1), scale=-0.5 / std ** 2,
                        bias=-2.0 * math.log(std) - math.log(2 * math.pi))


class LocationNetwork(nn.Layer):
    """Gaussian policy over the next fixation: l_t ~ N(mu, std^2 I), mu = tanh(fc_lt(relu(fc(h_t)))).

    The location is learnt by REINFORCE alone: the classification loss never reaches these
    weights. By default (the reference) the policy reads a detached h_t, so REINFORCE trains
    only these weights; with detach=False its gradient also reaches the core and glimpse
    networks, as in the paper's objective over all of the agent's parameters. `std` is the
    training std (a fixed hyperparameter).
    forward(h_t [B, in], noise [B, 2], std) -> (log_pi [B], l_t [B, 2]): noise is the
    standard-normal draw (RecurrentAttention.draw_episode), std the one to sample at (None:
    the training std; testing passes its own). At std 0, the policy's mean: l_t = mu and
    log_pi = 0, the noise unused.
    """

    def __init__(self, input_size, output_size, std, detach=True):
        super().__init__()
        self.std = float(std)
        self.detach = detach
        self.fc = nn.Linear(input_size, input_size // 2)
        self.fc_lt = nn.Linear(input_size // 2, output_size)

    def forward(self, h_t, noise, std=None):
        std = self.std if std is None else std
        hidden = F.relu(linear_sum((self.fc, h_t.detach() if self.detach else h_t)))
        mu = paddle.tanh(linear_sum((self.fc_lt, hidden)))
        if std == 0:  # the policy's mean: a deterministic fixation, log pi = 0
            return paddle.zeros([mu.shape[0]], dtype=mu.dtype), mu.detach()
        l_t = (mu + std * noise).detach()
        # Of the unclipped sample: the clipped one is where the sensor looks.
        return gaussian_log_pi(l_t - mu, std), l_t.clip(-1.0, 1.0)


class ActionNetwork(nn.Layer):
    """log_softmax(fc(h_t)): forward(h_t [B, in]) -> log-probabilities [B, num_classes]."""

    def __init__(self, input_size, output_size):
        super().__init__()
        self.fc = nn.Linear(input_size, output_size)

    def forward(self, h_t):
        return F.log_softmax(linear_sum((self.fc, h_t)), axis=1)


class BaselineNetwork(nn.Layer):
    """b_t = fc(h_t) on a detached h_t, so the baseline learns only from its own MSE.

    forward(h_t [B, in]) -> [B, output_size].
    """

    def __init__(self, input_size, output_size):
        super().__init__()
        self.fc = nn.Linear(input_size, output_size)

    def forward(self, h_t):
        return linear_sum((self.fc, h_t.detach()))
