"""RecurrentAttention: wires the modules of modules.py into one agent, and its episode.

A rollout of T glimpses on images x [B, C, H, W]:

    h_0 = 0;  l_0 ~ U(-1, 1)^2 (random), l_0 = (0, 0) (centre), or l_0 ~ pi(. | h_0) (learned)
    for t in 1..T:  g_t = sensor(x, l_{t-1});  h_t = rnn(g_t, h_{t-1})
                    l_t, log_pi_t = locator(h_t);  b_t = baseliner(h_t)
    log p(y | x) = classifier(h_T)

`rollout_loss` is the one episode that training, validation, testing and the benchmarks run:
the rollout and its hybrid loss (supervised classification, the baseline's regression and
REINFORCE for the locations), whose gradient Paddle's autograd computes; `predict` runs it at
the policy's mean (export, paddle.hub). `evaluate` runs it over a data set with draws that
belong to the images, and SearchMeter splits its error into search and recognition.
"""
from typing import NamedTuple

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

import data_loader
from modules import (ActionNetwork, BaselineNetwork, CoreNetwork, GlimpseNetwork,
                     LocationNetwork)

FIRST_FIXATIONS = ("random", "centre", "learned")


class RecurrentAttention(nn.Layer):
    """Args: g patch size, k patches per glimpse, s scale between patches, c image channels,
    h_g / h_l hidden sizes of the glimpse network, std of the location policy, hidden_size of
    the core, num_classes; reinforce_core lets the REINFORCE gradient reach the core and
    glimpse networks (default: the locator reads a detached h_t, as in the reference); core
    one of CoreNetwork.KINDS; first_fixation one of FIRST_FIXATIONS ("learned": the location
    network applied to h_0 = 0, a policy step of its own with its log-probability and
    baseline); num_glimpses the episode length predict() runs; normalize=(mean, std): the
    images hold pixel intensities 0..255, which the retina normalises (see modules.Retina),
    else it reads x as given."""

    def __init__(self, g, k, s, c, h_g, h_l, std, hidden_size, num_classes,
                 reinforce_core=False, core="rnn", first_fixation="random", num_glimpses=6,
                 normalize=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.first_fixation = first_fixation
        self.num_glimpses = num_glimpses  # what predict() runs
        self.sensor = GlimpseNetwork(h_g, h_l, g, k, s, c, normalize)
        self.rnn = CoreNetwork(h_g + h_l, hidden_size, core)
        self.locator = LocationNetwork(hidden_size, 2, std, detach=not reinforce_core)
        self.classifier = ActionNetwork(hidden_size, num_classes)
        self.baseliner = BaselineNetwork(hidden_size, 1)

    @property
    def policy_steps_before_first_glimpse(self):
        """1 when the first fixation is a draw of the policy (noise and log_pi get a row)."""
        return int(self.first_fixation == "learned")

    def draw_episode(self, batch, num_glimpses, dtype, l_0=None, noise=None, std=None):
        """The episode's random draws that are not given, from Paddle's seeded generator in
        this order: the first fixation l_0 [B, 2] uniform over the image (for a random first
        fixation; else None), then the policy's standard-normal noise [P + T, B, 2] (None at
        std 0, where the policy is its mean; std None: the training std)."""
        std = self.locator.std if std is None else std
        if l_0 is None and self.first_fixation == "random":
            l_0 = paddle.uniform([batch, 2], dtype=dtype, min=-1.0, max=1.0)
        if noise is None and std > 0:
            steps = self.policy_steps_before_first_glimpse + num_glimpses
            noise = paddle.randn([steps, batch, 2], dtype=dtype)
        return l_0, noise

    def forward(self, x, l_t_prev, h_t_prev, noise=None, std=None):
        """One glimpse at images x [B, C, H, W] (rollout reads T glimpses through one scene:
        see step).

        Args:
            l_t_prev: [B, 2]; h_t_prev: [B, state_size], the core's state (h_{t-1} itself for
            the RNN cores); noise: [B, 2] standard-normal draw for the location policy (None
            only at std 0); std: the policy's std (None: the training std).
        Returns:
            (state_t [B, state_size], l_t [B, 2], b_t [B], log_pi [B]); the classifier reads
            self.rnn.hidden(state_T) once the episode is over (see rollout).
        """
        return self.step(self.sensor.retina.scene(x), l_t_prev, h_t_prev, noise, std)

    def step(self, scene, l_t_prev, h_t_prev, noise=None, std=None):
        """forward, on a scene of the images (modules.Retina.scene)."""
        g_t = self.sensor(scene, l_t_prev)
        state = self.rnn(g_t, h_t_prev)
        h_t = self.rnn.hidden(state)
        log_pi, l_t = self.locator(h_t, noise, std)
        b_t = self.baseliner(h_t).squeeze(1)
        return state, l_t, b_t, log_pi

    def rollout(self, x, num_glimpses, l_0=None, noise=None, std=None):
        """A whole episode of num_glimpses glimpses.

        Args:
            x: [B, C, H, W]; l_0: optional first fixation [B, 2] (not with "learned");
            noise: optional location-policy noise [P + num_glimpses, B, 2] (exact, repeatable
            runs), P = policy_steps_before_first_glimpse; what is not given is drawn
            (draw_episode); std: the policy's std (None: the training std; 0: its mean).
        Returns:
            log_probas [B, classes], log_pi [B, P + T], baselines [B, P + T], locs [T, B, 2]
            where locs[t] is where glimpse t looked (locs[0] = l_0).
        """
        B = x.shape[0]
        if l_0 is not None and self.first_fixation == "learned":
            raise ValueError("a learned first fixation is drawn from the policy; pass noise")
        l_0, noise = self.draw_episode(B, num_glimpses, x.dtype, l_0, noise, std)
        scene = self.sensor.retina.scene(x)
        state = paddle.zeros([B, self.rnn.state_size], dtype=x.dtype)
        locs, log_pis, baselines = [], [], []
        if self.first_fixation == "learned":
            h_0 = self.rnn.hidden(state)
            log_pi, l_t = self.locator(h_0, None if noise is None else noise[0], std)
            log_pis.append(log_pi)
            baselines.append(self.baseliner(h_0).squeeze(1))
            noise = None if noise is None else noise[1:]
        elif l_0 is not None:
            l_t = l_0
        else:  # centre
            l_t = paddle.zeros([B, 2], dtype=x.dtype)
        for t in range(num_glimpses):
            locs.append(l_t)
            state, l_t, b_t, log_pi = self.step(scene, l_t, state,
                                                None if noise is None else noise[t], std)
            log_pis.append(log_pi)
            baselines.append(b_t)
        log_probas = self.classifier(self.rnn.hidden(state))
        return log_probas, paddle.stack(log_pis, 1), paddle.stack(baselines, 1), paddle.stack(locs)

    def predict(self, x, l_0=None):
        """Classify images x [N, C, H, W] (pixel intensities 0..255, a light digit on a dark
        ground, as MNIST; H x W the size the model was trained on) with the policy at its
        mean: one deterministic trajectory per image. l_0 [N, 2] is the first fixation of a
        model whose first fixation is random (default: the image's centre); a learned one
        takes x alone. Returns (probabilities [N, classes], fixations [T, N, 2] in [-1, 1],
        (column, row)). The export (export.py) writes this call."""
        if l_0 is None and self.first_fixation == "random":
            l_0 = paddle.zeros([x.shape[0], 2], dtype=x.dtype)
        log_probas, _, _, locs = self.rollout(x, self.num_glimpses, l_0, std=0.0)
        return log_probas.exp(), locs

    def fixation_pixels(self, x, locs):
        """The pixels (column, row) [T, N, 2] int64 that the sharp patches of glimpses
        locs [T, N, 2] centre on, in the frame of images x [N, C, H, W]."""
        T, N, _ = locs.shape
        return self.sensor.retina.centre(x, locs.reshape([T * N, 2])).reshape([T, N, 2])


def build_model(config):
    """The RecurrentAttention that `config` describes (1 channel, 10 classes: MNIST), reading
    pixel intensities 0..255 normalised with MNIST's mean and std, as the loaders deliver."""
    return RecurrentAttention(
        config.patch_size, config.num_patches, config.glimpse_scale, 1, config.glimpse_hidden,
        config.loc_hidden, config.std, config.hidden_size, data_loader.NUM_CLASSES,
        reinforce_core=config.reinforce_core, core=config.core,
        first_fixation=config.first_fixation, num_glimpses=config.num_glimpses,
        normalize=(data_loader.MEAN, data_loader.STD))


class Episode(NamedTuple):
    loss: paddle.Tensor        # [] hybrid loss
    correct: paddle.Tensor     # [] number of correctly classified images (float)
    log_probas: paddle.Tensor  # [B, classes], averaged over the M samples
    locs: paddle.Tensor        # [T, M*B, 2] where each glimpse looked


def rollout_loss(model, x, y, num_glimpses, M=1, reinforce_weight=0.01, l_0=None, noise=None,
                 rollouts=1, baseline="learned", std=None):
    """Run one episode on x [B, C, H, W] with labels y [B] and return its Episode.

    Evaluation (M > 1): each image is seen M times (independent location samples);
    log-probabilities, baselines and log_pi are averaged over the M copies, as the reference
    does. Training (rollouts K > 1): each image is seen K times, each copy its own episode
    with its own reward, so the REINFORCE estimate averages K trajectories per image. The
    loss is hybrid_loss's. l_0 [M*K*B, 2] and noise [P + T, M*K*B, 2] make the episode exact
    (see RecurrentAttention.rollout); std is the policy's (None: the training std).
    `correct` counts images: the mean over the K rollouts.
    """
    B = x.shape[0]
    copies = M * rollouts
    if copies > 1:
        x = x.tile([copies, 1, 1, 1])  # [copies*B, C, H, W], copy m of image b at row m*B + b
    log_probas, log_pi, baselines, locs = model.rollout(x, num_glimpses, l_0, noise, std)
    if M > 1:
        log_probas = log_probas.reshape([M, B, -1]).mean(0)               # [B, classes]
        log_pi = log_pi.reshape([M, B, -1]).mean(0)                       # [B, T]
        baselines = baselines.reshape([M, B, -1]).mean(0)                 # [B, T]
    if rollouts > 1:
        y = y.tile([rollouts])
    loss, correct = hybrid_loss(log_probas, log_pi, baselines, y, reinforce_weight,
                                loo=rollouts if baseline == "loo" else 0)
    return Episode(loss, correct.sum() / rollouts, log_probas, locs)


def hybrid_loss(log_probas, log_pi, baselines, y, reinforce_weight, loo=0):
    """The hybrid loss of an episode, from log_probas [N, classes], log_pi [N, T] and
    baselines [N, T], with R = 1 for a correct final classification, else 0, at every step:

        L = NLL(log p(y)) + mean_{N,t} (b_t - R)^2 + lambda * mean_N sum_t -log pi_t (R - b_t)

    lambda = reinforce_weight, b_t detached in the REINFORCE term. loo = K > 1: the N rows
    are K rollouts of N / K images (row k * N/K + i is rollout k of image i), and the
    REINFORCE term's b_t is the mean reward of image i's other K - 1 rollouts (leave one
    out). Returns (loss [], correct [N] as floats)."""
    correct = (log_probas.argmax(1) == y).astype(log_probas.dtype)        # [N]
    R = correct.unsqueeze(1).expand(baselines.shape)                      # [N, T]
    loss_action = F.nll_loss(log_probas, y)
    loss_baseline = F.mse_loss(baselines, R)
    if loo:
        per_image = correct.reshape([loo, -1])                            # [K, N/K]
        b = (per_image.sum(0, keepdim=True) - per_image) / (loo - 1)      # others' mean
        b = b.reshape([-1, 1]).expand(baselines.shape)
    else:
        b = baselines.detach()
    loss_reinforce = (-log_pi * (R - b)).sum(1).mean()
    return loss_action + loss_baseline + reinforce_weight * loss_reinforce, correct


# A fixation "finds" the digit when it lies within this many pixels of the digit's centre on
# both axes. MNIST digits fill the central 20x20 pixels of their 28x28 box, so within 10 px
# the sharpest patch is centred on the digit's strokes and, for any patch side g <= 20, at
# least half of its width on each axis lies over them: the sharp patch reads the digit.
FOUND_RADIUS = 10


class SearchMeter:
    """Splits the error of an evaluation into search and recognition.

    add(fixations [T, M*B, 2], centres [B, 2], correct [B]) takes each glimpse's fixation
    (pixel (column, row), Retina.centre), the digit's centre (data_loader's digit_centres)
    and whether each image was classified right. An image is found when any fixation of any
    of its M trajectories lies within FOUND_RADIUS of its digit on both axes. Sums stay on the
    device (no host sync per batch); totals() returns them as one float vector, which
    summary() reads (and distributed runs sum over ranks first)."""

    def __init__(self, num_glimpses):
        self.T = num_glimpses
        self.sums = paddle.zeros([4 + num_glimpses])

    @staticmethod
    def offsets(fixations, centres):
        """Each fixation [T, M*B, 2] minus its image's digit centre [B, 2]: [T, M, B, 2]."""
        T, MB, _ = fixations.shape
        B = centres.shape[0]
        return fixations.astype("float32").reshape([T, MB // B, B, 2]) - centres

    @staticmethod
    def found(offsets):
        """[B] 1.0 where some fixation of offsets [T, M, B, 2] is within FOUND_RADIUS of the
        digit on both axes, else 0.0."""
        return (offsets.abs().max(axis=3) <= FOUND_RADIUS).astype("float32").max(axis=[0, 1])

    def add(self, fixations, centres, correct):
        B = centres.shape[0]
        offset = self.offsets(fixations, centres)
        found = self.found(offset)
        dist = offset.pow(2).sum(axis=3).sqrt().mean(axis=1).sum(axis=1)               # [T]
        correct = correct.astype("float32")
        counts = paddle.stack([paddle.full([], B, "float32"), found.sum(),
                               (found * correct).sum(), ((1 - found) * correct).sum()])
        self.sums += paddle.concat([counts, dist])

    def totals(self):
        return self.sums.tolist()

    @staticmethod
    def summary(totals):
        """{found (% of images), err_found, err_lost (% of those images), lost_errors (% of
        all errors), dist [T] (mean px from the digit's centre per glimpse)} from totals()."""
        n, found, right_found, right_lost = totals[:4]
        lost = n - found
        errors = n - right_found - right_lost

        def pct(a, b):
            return 100.0 * a / b if b else float("nan")
        return {"found": pct(found, n), "err_found": pct(found - right_found, found),
                "err_lost": pct(lost - right_lost, lost),
                "lost_errors": pct(lost - right_lost, errors),
                "dist": [d / n for d in totals[4:]]}

    @staticmethod
    def describe(s, short=False):
        """One line for logs (short: the epoch line's part); '-' where no image counts."""
        def pct(key, digits=2):
            return "-" if s[key] != s[key] else f"{s[key]:.{digits}f}"  # NaN: no such images
        if short:
            return f"found {pct('found', 1)} err found {pct('err_found')} lost {pct('err_lost')}"
        return (f"found {pct('found', 1)}% (a fixation within {FOUND_RADIUS} px of the digit), "
                f"err found {pct('err_found')}% lost {pct('err_lost')}% "
                f"(lost: {pct('lost_errors', 0)}% of errors) | dist/glimpse "
                + " ".join(f"{d:.1f}" for d in s["dist"]) + " px")


class Evaluation(NamedTuple):
    loss: float
    acc: float                 # % of the images right
    correct: int
    search: dict               # model.SearchMeter.summary


def seeded_batches(model, loader, num_glimpses, M, seed):
    """Evaluation batches (x, y, l_0, noise, centres) whose random draws belong to the images:
    image i of the set gets its first fixations and policy noise from (seed, i) alone, so an
    evaluation counts the same at any batch size, on one process or several, on any device.

    The draws of the whole set, uniform l_0 [N, M, 2] and standard-normal noise
    [N, M, P + T, 2], are made once on the host and gathered per batch into the layout of
    rollout_loss: l_0 [M*B, 2] (None unless the first fixation is random) and
    noise [P + T, M*B, 2], copy m of image b at row m*B + b; with them the digits' centres
    [B, 2] (data_loader's digit_centres), which the search report reads."""
    n, steps = loader.num_samples, model.policy_steps_before_first_glimpse + num_glimpses
    rng = np.random.RandomState(seed)
    l_0_all = paddle.to_tensor(rng.uniform(-1.0, 1.0, (n, M, 2)).astype(np.float32))
    noise_all = paddle.to_tensor(rng.standard_normal((n, M, steps, 2)).astype(np.float32))
    for idx, x, y in loader.iterate(with_index=True):
        B = x.shape[0]
        noise = paddle.gather(noise_all, idx).transpose([2, 1, 0, 3]).reshape([steps, M * B, 2])
        l_0 = None
        if model.first_fixation == "random":
            l_0 = paddle.gather(l_0_all, idx).transpose([1, 0, 2]).reshape([M * B, 2])
        yield x, y, l_0, noise, loader.digit_centres(idx)


@paddle.no_grad()
def evaluate(model, loader, num_glimpses, M=1, seed=1, std=None, sum_over_ranks=None):
    """The Evaluation of `model` over a loader: M samples per image at policy std `std`
    (None: the training std) on the draws of seeded_batches(seed)."""
    model.eval()
    loss_sum, correct = paddle.zeros([]), paddle.zeros([])
    search = SearchMeter(num_glimpses)
    for x, y, l_0, noise, centres in seeded_batches(model, loader, num_glimpses, M, seed):
        ep = rollout_loss(model, x, y, num_glimpses, M, l_0=l_0, noise=noise, std=std)
        loss_sum += ep.loss * x.shape[0]
        correct += ep.correct
        search.add(model.fixation_pixels(x, ep.locs), centres, ep.log_probas.argmax(1) == y)
    totals = [float(loss_sum), float(correct)] + search.totals()
    loss_sum, correct, *totals = (sum_over_ranks or list)(totals)
    n, correct = loader.num_samples, int(round(correct))
    return Evaluation(loss_sum / n, 100.0 * correct / n, correct, SearchMeter.summary(totals))


def error_rate(model, loader, num_glimpses, M=1, seed=1, std=None):
    """Test error (%) of `model` over a loader (evaluate)."""
    return 100.0 - evaluate(model, loader, num_glimpses, M, seed, std).acc
