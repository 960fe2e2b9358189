"""Training, validation and test of RAM: the loss, the loop, checkpoints and logs.

One function, `rollout_loss`, defines an episode and the hybrid loss for train (M = 1),
validation and test (M Monte-Carlo samples per image), under Paddle's autograd. Training runs
its fast path, `fused_rollout_loss`: the same episode with the gradient written out by hand
(tests/test_fused.py holds it equal to rollout_loss's). Everything else here is bookkeeping.
"""
import contextlib
import glob
import json
import math
import os
import pickle
import re
import signal
import sys
import time
from functools import partial
from typing import NamedTuple

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer
from tqdm import tqdm

import data_loader
from config import EVAL_STD, check_config, checkpoint_config
from model import RecurrentAttention, SearchMeter
from modules import gaussian_log_pi
from utils import (ARCH_KEYS, TRAIN_KEYS, RamError, RunLock, atomic_save, atomic_write,
                   check_batch_split,
                   check_not_pretrained, ensure_dir, fixed_rng, get_logger, init_distributed,
                   model_name, remove_stale_temporaries)


# Validation pass p draws its fixations from seed VALID_NOISE_SEED + p: every epoch is
# validated on the same draws, and training's random stream never sees them.
VALID_NOISE_SEED = 1


class Evaluation(NamedTuple):
    loss: float
    acc: float                 # % of the images right
    correct: int
    search: dict               # model.SearchMeter.summary


class Episode(NamedTuple):
    loss: paddle.Tensor        # [] hybrid loss
    correct: paddle.Tensor     # [] number of correctly classified images (float)
    log_probas: paddle.Tensor  # [B, classes], averaged over the M samples
    locs: paddle.Tensor        # [T, M*B, 2] where each glimpse looked


def rollout_loss(model, x, y, num_glimpses, M=1, reinforce_weight=0.01, l_0=None, noise=None,
                 rollouts=1, baseline="learned"):
    """Run one episode on x [B, C, H, W] with labels y [B] and return its Episode.

    Evaluation (M > 1): each image is seen M times (independent location samples);
    log-probabilities, baselines and log_pi are averaged over the M copies, as the reference
    does. Training (rollouts K > 1): each image is seen K times, each copy its own episode
    with its own reward, so the REINFORCE estimate averages K trajectories per image. The
    hybrid loss is
        NLL(log p(y)) + MSE(b_t, R) + reinforce_weight * mean sum_t -log_pi_t (R - b_t)
    with R = 1 for a correct final classification, else 0, given at every step; with
    baseline="loo" the b_t of the REINFORCE term is instead the mean reward of the same
    image's other K - 1 rollouts. l_0 [M*K*B, 2] and noise [P + T, M*K*B, 2] make the
    episode exact (see RecurrentAttention.rollout). `correct` counts images: the mean over
    the K rollouts.
    """
    B = x.shape[0]
    copies = M * rollouts
    if copies > 1:
        x = x.tile([copies, 1, 1, 1])  # [copies*B, C, H, W], copy m of image b at row m*B + b
    log_probas, log_pi, baselines, locs = model.rollout(x, num_glimpses, l_0, noise)
    if M > 1:
        log_probas = log_probas.reshape([M, B, -1]).mean(0)               # [B, classes]
        log_pi = log_pi.reshape([M, B, -1]).mean(0)                       # [B, T]
        baselines = baselines.reshape([M, B, -1]).mean(0)                 # [B, T]
    if rollouts > 1:
        y = y.tile([rollouts])
    loss, correct, _ = hybrid_loss(log_probas, log_pi, baselines, y, reinforce_weight,
                                   loo=rollouts if baseline == "loo" else 0)
    return Episode(loss, correct.sum() / rollouts, log_probas, locs)


def hybrid_loss(log_probas, log_pi, baselines, y, reinforce_weight, loo=0):
    """The hybrid loss of an episode, from log_probas [N, classes], log_pi [N, T] and
    baselines [N, T]: NLL(log p(y)) + MSE(b_t, R) + reinforce_weight * mean_N sum_t
    -log_pi_t (R - b_t), the baseline detached in the REINFORCE term. loo = K > 1: the N rows
    are K rollouts of N / K images (row k * N/K + i is rollout k of image i), and the
    REINFORCE term's b_t is the mean reward of image i's other K - 1 rollouts (leave one out).
    Returns (loss [], correct [N] as floats, R [N, T])."""
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
    return loss_action + loss_baseline + reinforce_weight * loss_reinforce, correct, R


def _relu_mask(grad, out):
    """The gradient through relu, given its output: zero where out == 0. Paddle's own relu
    backward kernel (what autograd runs) where the build exposes it: one pass instead of four
    ops (a zero, a compare, a cast, a product)."""
    if _relu_grad is not None:
        return _relu_grad(out, grad)
    return grad * (out > 0).astype(grad.dtype)


_relu_grad = getattr(paddle._C_ops, "relu_grad", None)


class _FusedEpisode(PyLayer):
    """The training episode of rollout_loss (M = 1) with its gradient written out by hand.

    The forward pass runs the operations of RecurrentAttention.rollout + rollout_loss in the
    same order with the same random draws, so fixations and log-probabilities are
    bit-identical (the loss equal to float rounding: the baselines of all glimpses are one
    GEMM). The backward pass is plain BPTT, but every weight gradient is one GEMM over all T
    glimpses ([T*B, in]^T @ [T*B, out]) instead of T small ones plus T accumulations, and no
    autograd graph is recorded: ~250 eager ops per step instead of ~550 with their grad nodes.
    What the backward pass reads is kept glimpse-major in one [T*B, n] block per quantity
    (rows t*B .. t*B + B - 1 are glimpse t), the layout those GEMMs take, so no op is spent
    reshaping. Both routings of the REINFORCE gradient: the reference's (the locator reads a
    detached h_t) and --reinforce_core's (it reads h_t itself, so the gradient also enters
    BPTT at every glimpse). The baseline always reads a detached h_t.
    """

    @staticmethod
    @paddle.no_grad()  # no graph: backward below is the whole gradient
    def forward(ctx, model, x, y, l_0, noise, reinforce_weight, *params):
        (W1, b1, W2, b2, W3, b3, W4, b4, Wi, bi, Wh, bh,
         Wf, bf, Wl, bl, Wc, bc, Wb, bb) = params
        T, B = noise.shape[0], x.shape[0]
        std = model.locator.std
        retina = model.sensor.retina
        b34, bih = b3 + b4, bi + bh  # linear_sum's bias order
        l_t, h_t = l_0, None
        keep = {k: [] for k in ("phi", "loc", "what", "where", "g", "h", "u", "mu", "l_raw")}
        noise = paddle.unbind(std * noise)  # T x [B, 2]: std * noise[t], as rollout computes it
        for t in range(T):
            phi = retina.foveate(x, l_t)                                         # [B, P]
            what = F.relu(paddle.addmm(b1, phi, W1))                             # [B, h_g]
            where = F.relu(paddle.addmm(b2, l_t, W2))                            # [B, h_l]
            g = F.relu(paddle.addmm(paddle.addmm(b34, what, W3), where, W4))     # [B, h_g+h_l]
            pre = paddle.addmm(bih, g, Wi)
            if h_t is not None:  # h_0 = 0: its product is exactly zero
                pre = paddle.addmm(pre, h_t, Wh)
            h_t = F.relu(pre)                                                    # [B, hid]
            u = F.relu(paddle.addmm(bf, h_t, Wf))                                # [B, hid/2]
            mu = paddle.tanh(paddle.addmm(bl, u, Wl))                            # [B, 2]
            l_raw = mu + noise[t]
            for k, v in (("phi", phi), ("loc", l_t), ("what", what), ("where", where),
                         ("g", g), ("h", h_t), ("u", u), ("mu", mu), ("l_raw", l_raw)):
                keep[k].append(v)
            l_t = l_raw.clip(-1.0, 1.0)
        S = {k: paddle.concat(v) for k, v in keep.items()}                       # [T*B, ...]
        # What the trajectory does not depend on, for all glimpses at once.
        S["dev"] = S["l_raw"] - S["mu"]                                          # [T*B, 2]
        log_pi = gaussian_log_pi(S["dev"], std).reshape([T, B]).t()              # [B, T]
        baselines = paddle.addmm(bb, S["h"], Wb).reshape([T, B]).t()             # [B, T]
        log_probas = F.log_softmax(paddle.addmm(bc, h_t, Wc), axis=1)            # [B, classes]
        loss, correct, R = hybrid_loss(log_probas, log_pi, baselines, y, reinforce_weight)
        ctx.std, ctx.weight, ctx.params, ctx.stacked = std, reinforce_weight, params, S
        ctx.into_core = not model.locator.detach
        ctx.save_for_backward(y, log_probas, baselines, R)
        n_correct, locs = correct.sum(), S["loc"].reshape([T, B, 2])
        ctx.mark_non_differentiable(n_correct, log_probas, locs)
        return loss, n_correct, log_probas, locs

    @staticmethod
    def backward(ctx, d_loss, *unused):
        (W1, b1, W2, b2, W3, b3, W4, b4, Wi, bi, Wh, bh,
         Wf, bf, Wl, bl, Wc, bc, Wb, bb) = ctx.params
        y, log_probas, baselines, R = ctx.saved_tensor()
        s, S = d_loss, ctx.stacked
        B, std = y.shape[0], ctx.std
        T = S["h"].shape[0] // B
        ones = paddle.ones([T * B], dtype=baselines.dtype)

        def wgrad(inp, grad):  # sum over the T*B rows of inp^T @ grad
            return paddle.matmul(inp, grad, transpose_x=True)

        def bgrad(grad):  # column sums as a GEMM: Paddle's CPU sum() is far slower
            return paddle.matmul(ones, grad)

        def glimpse(a, t):  # rows of glimpse t
            return a[t * B:(t + 1) * B]

        # Action network: d NLL / d logits = (softmax - onehot) / B.
        d_logits = (log_probas.exp() - F.one_hot(y, log_probas.shape[1])) * (s / B)
        h_T = glimpse(S["h"], T - 1)
        dWc, dbc = paddle.matmul(h_T, d_logits, transpose_x=True), d_logits.sum(0)
        # Baseline: d MSE / d b = 2 (b - R) / (B T); REINFORCE: d / d log_pi = -w (R - b) / B
        # (b detached there). The baseline reads a detached h_t, and so does the locator
        # unless --reinforce_core (d_h_loc below): by default nothing here reaches the core.
        diff = (baselines - R).t().reshape([T * B, 1])                          # [T*B, 1]
        d_b = diff * (2.0 / (B * T)) * s
        dWb, dbb = wgrad(S["h"], d_b), bgrad(d_b)
        # d log_pi / d mu = (l_raw - mu) / std^2; then tanh and relu of the location network.
        d_z = diff * (ctx.weight / B / std ** 2) * s * S["dev"] * (1.0 - S["mu"] * S["mu"])
        dWl, dbl = wgrad(S["u"], d_z), bgrad(d_z)                                # d_z [T*B, 2]
        d_u = _relu_mask(paddle.matmul(d_z, Wl, transpose_y=True), S["u"])       # [T*B, hid/2]
        dWf, dbf = wgrad(S["h"], d_u), bgrad(d_u)
        # --reinforce_core: what REINFORCE sends into each h_t, for all glimpses at once.
        d_h_loc = paddle.matmul(d_u, Wf, transpose_y=True) if ctx.into_core else None  # [T*B, hid]
        # Core RNN, backwards in time from the classifier's gradient at h_T.
        d_h = paddle.matmul(d_logits, Wc, transpose_y=True)                      # [B, hid]
        d_pre = [None] * T
        for t in range(T - 1, -1, -1):
            if d_h_loc is not None:
                d_h = d_h + glimpse(d_h_loc, t)
            d_pre[t] = _relu_mask(d_h, glimpse(S["h"], t))
            if t:
                d_h = paddle.matmul(d_pre[t], Wh, transpose_y=True)
        d_pre = paddle.concat(d_pre)                                             # [T*B, hid]
        # h_0 = 0: the recurrent weights see glimpses 1..T-1 only.
        dWh = wgrad(S["h"][:(T - 1) * B], d_pre[B:]) if T > 1 else paddle.zeros_like(Wh)
        dbih = bgrad(d_pre)
        dWi = wgrad(S["g"], d_pre)
        # Glimpse network: all T glimpses at once.
        d_g = _relu_mask(paddle.matmul(d_pre, Wi, transpose_y=True), S["g"])    # [T*B, h_g+h_l]
        dW3, dW4, db34 = wgrad(S["what"], d_g), wgrad(S["where"], d_g), bgrad(d_g)
        d_what = _relu_mask(paddle.matmul(d_g, W3, transpose_y=True), S["what"])
        d_where = _relu_mask(paddle.matmul(d_g, W4, transpose_y=True), S["where"])
        dW1, db1 = wgrad(S["phi"], d_what), bgrad(d_what)
        dW2, db2 = wgrad(S["loc"], d_where), bgrad(d_where)
        return (None, None, None, None,
                dW1, db1, dW2, db2, dW3, db34, dW4, db34, dWi, dbih, dWh, dbih,
                dWf, dbf, dWl, dbl, dWc, dbc, dWb, dbb)


def fused_parameters(model):
    """The parameters _FusedEpisode takes, in its order."""
    s, r, lo = model.sensor, model.rnn, model.locator
    layers = (s.fc1, s.fc2, s.fc3, s.fc4, r.i2h, r.h2h, lo.fc, lo.fc_lt, model.classifier.fc,
              model.baseliner.fc)
    return [p for layer in layers for p in (layer.weight, layer.bias)]


def fused_rollout_loss(model, x, y, num_glimpses, reinforce_weight=0.01, l_0=None, noise=None):
    """rollout_loss(model, x, y, num_glimpses, 1, reinforce_weight, l_0, noise) for training:
    the same Episode and the same gradients (to float rounding), faster (see _FusedEpisode).
    Draws what is not given as rollout does (RecurrentAttention.draw_episode)."""
    l_0, noise = model.draw_episode(x.shape[0], num_glimpses, x.dtype, l_0, noise)
    loss, correct, log_probas, locs = _FusedEpisode.apply(
        model, x, y, l_0, noise, reinforce_weight, *fused_parameters(model))
    return Episode(loss, correct, log_probas, locs)


class EpisodeLayer(nn.Layer):
    """A whole training episode as one layer: forward(x [B, C, H, W], y [B], l_0 [B, 2] or
    None, noise [T, B, 2] or None) -> Episode of rollout_loss with M = 1.

    paddle.DataParallel arms its gradient all-reduce in its forward, once per backward; the
    model's own forward is a single glimpse, called T times per episode, so the episode has
    to be the forward of the layer that DataParallel wraps. `fused` picks the hand-written
    gradient of _FusedEpisode (what training runs) or Paddle's autograd through
    rollout_loss (the plain episode that tests and `train_speed.py --plain` compare it with).
    """

    def __init__(self, model, num_glimpses, reinforce_weight, fused=True, rollouts=1,
                 baseline="learned"):
        super().__init__()
        self.model = model
        self.num_glimpses, self.reinforce_weight = num_glimpses, reinforce_weight
        # The hand-written gradient covers the reference's episode: one rollout per image, the
        # RNN core, a random first fixation and the learned baseline.
        self.fused = fused and fusable(model, rollouts, baseline)
        self.rollouts, self.baseline = rollouts, baseline

    def forward(self, x, y, l_0=None, noise=None):
        if self.fused:
            return fused_rollout_loss(self.model, x, y, self.num_glimpses,
                                      reinforce_weight=self.reinforce_weight, l_0=l_0, noise=noise)
        return rollout_loss(self.model, x, y, self.num_glimpses, 1, self.reinforce_weight, l_0,
                            noise, self.rollouts, self.baseline)


def fused_matches_model(model, x, y, num_glimpses, reinforce_weight, seed=0, tol=1e-4):
    """Run one batch through the fused episode and through rollout_loss (the model as
    modules.py defines it) on the same fixation draws; None if the loss and every
    parameter's gradient agree to float rounding, else what differs. Leaves no gradient
    behind and the training run's random stream where it was."""
    results = []
    with fixed_rng(seed):
        l_0, noise = model.draw_episode(x.shape[0], num_glimpses, x.dtype)
    for episode in (fused_rollout_loss, partial(rollout_loss, M=1)):
        model.clear_gradients(set_to_zero=False)
        ep = episode(model, x, y, num_glimpses, reinforce_weight=reinforce_weight, l_0=l_0,
                     noise=noise)
        ep.loss.backward()
        results.append((float(ep.loss), {k: None if p.grad is None else p.grad.numpy().copy()
                                         for k, p in model.named_parameters()}))
    model.clear_gradients(set_to_zero=False)
    (loss_f, g_f), (loss_a, g_a) = results
    if not (math.isfinite(loss_f) and math.isfinite(loss_a)):
        return None  # diverged weights: nothing to compare; training reports the divergence
    if not math.isclose(loss_f, loss_a, rel_tol=tol, abs_tol=1e-6):
        return f"loss {loss_f:.6g} against {loss_a:.6g}"
    for k, ga in g_a.items():
        gf = g_f[k]
        if ga is None or gf is None:
            if (ga is None) != (gf is None):
                return f"gradient of {k}"
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            scale = float(np.abs(ga).max()) + 1e-6
            if not float(np.abs(gf - ga).max()) <= tol * scale:  # NaN differs too
                return f"gradient of {k}"
    return None


def fusable(model, rollouts=1, baseline="learned"):
    """Whether _FusedEpisode computes this model's training episode."""
    return (model.rnn.kind == "rnn" and model.first_fixation == "random" and rollouts == 1
            and baseline == "learned")


def load_checkpoint_file(path):
    """Read a checkpoint dict, turning every failure into one RamError line."""
    if not os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        have = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.pdparams")))
        raise RamError(f"checkpoint {path} not found; {folder} holds: "
                       f"{', '.join(have) if have else 'no .pdparams files'} "
                       "(train first, or pass --ckpt, --ckpt_dir, --best or --last_epoch)")
    try:
        state = paddle.load(path)
    except Exception as e:
        if _is_torch_file(path):
            raise RamError(f"{path} is a PyTorch checkpoint; convert it first with python "
                           f"align.py --torch_ckpt {path} --out <file>.pdparams") from None
        raise RamError(f"cannot read checkpoint {path}: corrupt or not a Paddle file "
                       f"({type(e).__name__}); use another checkpoint") from None
    if not isinstance(state, dict) or "model_state" not in state:
        hint = (f"it looks like a PyTorch file: convert it with python align.py --torch_ckpt "
                f"{path} --out <file>.pdparams" if _is_torch_file(path) else
                "use a file written by main.py or converted by align.py")
        raise RamError(f"{path} is not a RAM checkpoint (no 'model_state'); {hint}")
    bad = [k for k, v in state["model_state"].items()
           if not np.isfinite(np.asarray(v.numpy() if hasattr(v, "numpy") else v)).all()]
    if bad:
        raise RamError(f"checkpoint {path} has non-finite weights (NaN or inf in {', '.join(bad[:3])}"
                       f"{' ...' if len(bad) > 3 else ''}): it was saved after training diverged; "
                       "use an earlier checkpoint")
    return state


def _is_torch_file(path):
    """PyTorch's format: a zip archive with a data.pkl, or a .pth/.pt name."""
    import zipfile
    if path.endswith((".pth", ".pt")):
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


# The reference implementation's published checkpoint stores weights alone; it was trained
# with these (its README and config.py), so a file without a config is read with them.
REFERENCE_ARCH = {"patch_size": 8, "glimpse_scale": 1, "num_patches": 1, "loc_hidden": 128,
                  "glimpse_hidden": 128, "num_glimpses": 6, "hidden_size": 256, "std": 0.05,
                  "dataset": "mnist", "canvas": 28, "clutter": 0, "core": "rnn",
                  "first_fixation": "random"}


def stored_config(state):
    """The config a checkpoint was written with; REFERENCE_ARCH for the reference's files."""
    return state.get("config") or dict(REFERENCE_ARCH)


def adopt_arch(config, state):
    """Copy the architecture stored in a checkpoint (if any) onto config; returns what changed."""
    stored = stored_config(state)
    diff = [k for k in ARCH_KEYS if k in stored and stored[k] != getattr(config, k, None)]
    for k in diff:
        setattr(config, k, stored[k])
    return diff


def build_model(config):
    """The RecurrentAttention that `config` describes (1 channel, 10 classes: MNIST), reading
    pixel intensities 0..255 normalised with MNIST's mean and std, as the loaders deliver."""
    return RecurrentAttention(
        config.patch_size, config.num_patches, config.glimpse_scale, 1, config.glimpse_hidden,
        config.loc_hidden, config.std, config.hidden_size, data_loader.NUM_CLASSES,
        reinforce_core=config.reinforce_core, core=config.core,
        first_fixation=config.first_fixation,
        normalize=(data_loader.MEAN, data_loader.STD))


def load_model_state(model, state, path, name):
    """Load state['model_state'] into model after checking every key and shape (one RamError),
    and the location policy's std the file was saved with (files without one keep the
    model's, i.e. --std)."""
    own, theirs = model.state_dict(), state["model_state"]
    problems = [f"missing {k}" for k in own if k not in theirs]
    problems += [f"unexpected {k}" for k in theirs if k not in own]
    problems += [f"{k} has shape {list(theirs[k].shape)}, model needs {list(v.shape)}"
                 for k, v in own.items() if k in theirs and list(theirs[k].shape) != list(v.shape)]
    if problems:
        raise RamError(f"checkpoint {path} does not fit this architecture ({name}): "
                       + "; ".join(problems) + ". Pass the flags it was trained with, or --ckpt")
    model.set_state_dict(theirs)
    model.locator.std = float(state.get("std", model.locator.std))


def saved_eval_std(state):
    """The policy std that testing a checkpoint with M = 1 samples at (--eval_std), or None
    for files that predate the flag (and the reference's): those use their training std."""
    std = state.get("eval_std")
    return None if std is None else float(std)


def load_model(path):
    """The checkpoint's model in eval mode, sampling fixations as testing it does (at its
    eval std), and its config (config.checkpoint_config: the defaults with the architecture,
    dataset and validation split stored in the checkpoint). Every failure is one RamError
    line."""
    state = load_checkpoint_file(path)
    config = checkpoint_config(stored_config(state))
    check_config(config)
    model = build_model(config)
    load_model_state(model, state, path, model_name(config))
    eval_std = saved_eval_std(state)
    model.locator.std = model.locator.std if eval_std is None else eval_std
    model.eval()
    return model, config


class DeterministicEpisode(nn.Layer):
    """A whole episode with the location policy at its mean, for inference:
    forward(x [N, C, H, W] pixel intensities 0..255, l_0 [N, 2]) ->
    (log_probas [N, classes], locs [T, N, 2]). With a learned first fixation l_0 is the
    policy's own and the layer takes x alone."""

    def __init__(self, model, num_glimpses):
        super().__init__()
        self.model, self.num_glimpses = model, num_glimpses
        model.locator.std = 0.0
        model.eval()

    def forward(self, x, l_0=None):
        log_probas, _, _, locs = self.model.rollout(x, self.num_glimpses, l_0)
        return log_probas, locs


def export_inference(path, out_dir):
    """Write the checkpoint at `path` as a Paddle Inference model of the whole episode
    (paddle.jit.save: the glimpse loop unrolled in the graph) into out_dir, with
    ram_config.json describing its input. Returns [(file, bytes)]."""
    from paddle.static import InputSpec
    model, config = load_model(path)  # a fresh model: its retina caches hold no tensors yet
    check_not_pretrained(out_dir, "--export")
    ensure_dir(out_dir, "--export")
    net = DeterministicEpisode(model, config.num_glimpses)
    spec = [InputSpec([None, 1, config.canvas, config.canvas], "float32", "x")]
    if config.first_fixation != "learned":
        spec.append(InputSpec([None, 2], "float32", "l_0"))
    stem = os.path.join(out_dir, "inference")
    try:
        paddle.jit.save(net, stem, input_spec=spec)
        described = {"checkpoint": os.path.abspath(path), "inputs": [s.name for s in spec],
                     "image_size": config.canvas, "pixels": "intensities 0..255, digit light on dark",
                     "outputs": ["log_probas [N, 10]", "locs [T, N, 2]"],
                     "config": {k: getattr(config, k) for k in ARCH_KEYS}}
        with open(os.path.join(out_dir, "ram_config.json"), "w") as f:
            json.dump(described, f, indent=2)
    except OSError as e:
        raise RamError(f"cannot write the inference model in {out_dir}: {e.strerror}") from None
    files = sorted(os.listdir(out_dir))
    return [(os.path.join(out_dir, f), os.path.getsize(os.path.join(out_dir, f))) for f in files]


def inference_predictor(model_dir):
    """(predictor, ram_config dict) of a model written by export_inference, on the CPU."""
    from paddle import inference
    meta = os.path.join(model_dir, "ram_config.json")
    if not os.path.isfile(meta):
        raise RamError(f"{model_dir} holds no exported RAM model (no ram_config.json); write one "
                       "with python main.py --export DIR --ckpt FILE")
    with open(meta) as f:
        described = json.load(f)
    cfg = inference.Config(os.path.join(model_dir, "inference.json"),
                           os.path.join(model_dir, "inference.pdiparams"))
    cfg.disable_gpu()
    # oneDNN's graph passes fuse the pooled patches' transposes into an op (fused_transpose)
    # this CPU build has no kernel for; plain CPU kernels run the model.
    cfg.disable_mkldnn()
    cfg.disable_glog_info()
    return inference.create_predictor(cfg), described


def run_predictor(predictor, x, l_0=None):
    """Run an inference predictor on x [N, 1, H, W] (and l_0 [N, 2]) numpy arrays; returns
    (log_probas [N, classes], locs [T, N, 2])."""
    names = predictor.get_input_names()
    feeds = {"x": x, "l_0": l_0}
    for name in names:
        predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name]))
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def seeded_batches(model, loader, num_glimpses, M, seed):
    """Evaluation batches (x, y, l_0, noise) whose random draws belong to the images: image
    i of the set gets its first fixations and policy noise from (seed, i) alone, so an
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
        yield (x, y, l_0.astype(x.dtype) if l_0 is not None else None, noise.astype(x.dtype),
               loader.digit_centres(idx))


@paddle.no_grad()
def error_rate(model, loader, num_glimpses, M=1, seed=1):
    """Error (%) of `model` over a loader, M samples per image at the policy's current std,
    the draws of seeded_batches(seed)."""
    correct = paddle.zeros([])
    for x, y, l_0, noise, _ in seeded_batches(model, loader, num_glimpses, M, seed):
        correct += rollout_loss(model, x, y, num_glimpses, M, l_0=l_0, noise=noise).correct
    return 100.0 - 100.0 * float(correct) / loader.num_samples


def validation_loader(config, data_dir, batch_size):
    """The validation split a checkpoint was trained against, given the config load_model
    returns for it (its stored seed, split size and shuffle flag)."""
    _, loader = data_loader.get_train_valid_loader(
        data_dir, batch_size, config.random_seed, config.valid_size, config.shuffle,
        dataset=config.dataset, canvas=config.canvas, clutter=config.clutter)
    return loader


def _rename_optim_keys(optim_state, rename):
    """Optimizer accumulators are keyed '<param name>_<accumulator>'; rename the param part."""
    out = {}
    for key, value in optim_state.items():
        for old, new in rename.items():
            if key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging).

    After every optimiser step, avg <- d * avg + (1 - d) * w, with d = min(decay, (1 + n) /
    (10 + n)) at step n so that the first steps do not drag the initial weights along. REINFORCE
    makes every step noisy; the average keeps the progress and drops most of the noise, which is
    what validation measures and what the best checkpoint stores.
    """

    def __init__(self, model, decay):
        self.model, self.decay = model, float(decay)
        self.reset()

    def reset(self, steps=0):
        """Start the average at the model's current weights, as if after `steps` steps."""
        self.steps = int(steps)
        self.avg = {k: p.detach().clone() for k, p in self.model.named_parameters()}

    @paddle.no_grad()
    def update(self):
        self.steps += 1
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for k, p in self.model.named_parameters():
            # In place, on the device (no host sync); Paddle's CPU lerp_ is slower.
            self.avg[k].scale_(d).add_(p * (1.0 - d))

    def state_dict(self):
        return dict(self.avg)

    @contextlib.contextmanager
    def applied(self):
        """Run the block with the averaged weights in the model, then put the raw ones back."""
        raw = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        self.model.set_state_dict(self.avg)
        try:
            yield
        finally:
            self.model.set_state_dict(raw)


class Trainer:
    """Builds the model (from the flags or a checkpoint) and trains or tests it.

    Checkpoints are dicts {epoch, model_state, optim_state, best_valid_acc, counter, elapsed,
    config, rng_state, std, eval_std}; the reference's files (only the first four) load as
    well. `std` is the location policy's std, which validation samples at; `eval_std` the std that
    testing the file with M = 1 samples at (files without one use `std`). With --ema_decay,
    model_state holds the averaged weights (those that validation measured and that testing
    uses) and two more keys hold what resuming needs: raw_state, the optimiser's own weights,
    and ema_steps.

    Started by paddle.distributed.launch, every process builds a Trainer: the training step
    runs under paddle.DataParallel, metrics are summed over the ranks, and only rank 0 logs
    and writes files. Checkpoints hold the bare model, so any number of ranks can resume them.
    `plot_curves(log_file, out_png)`, if given, draws the learning curves when training ends
    (main.py passes plot_glimpses.plot_curves).
    """

    def __init__(self, config, device="cpu", plot_curves=None):
        self.config = config
        self.device = device
        self._draw_curves = plot_curves
        self.rank, self.world = init_distributed()
        self.is_main = self.rank == 0
        if self.world > 1 and config.is_train:
            check_batch_split(config.batch_size, self.world)
        self.lock = None
        if config.is_train and self.is_main:
            self._prepare_output_dirs()
        state = None
        if config.resume or not config.is_train:
            state = load_checkpoint_file(self.checkpoint_path())
            adopted = self._check_or_adopt_arch(state)
        self.name = model_name(config)
        if config.is_train and not config.resume and self.is_main:
            self._refuse_to_clobber()
        # A test run keeps its own log: training logs hold training alone.
        log_file = os.path.join(config.logs_dir, self.name + ("" if config.is_train else "_test")
                                + ".log")
        if not config.is_train:
            try:
                check_not_pretrained(config.logs_dir, "--logs_dir")
                ensure_dir(config.logs_dir, "--logs_dir")
            except RamError as e:
                print(f"[!] {e}; the test prints to the screen only")
                log_file = None
        try:
            self.logger = get_logger("ram", log_file if self.is_main else None,
                                     console=self.is_main)
        except OSError as e:
            raise RamError(f"cannot write the log {log_file}: {e.strerror}; pass another "
                           "--logs_dir") from None
        threads = f" ({os.environ.get('MKL_NUM_THREADS')} MKL threads)" if device == "cpu" else ""
        self.logger.info(f"[*] Device: {device}{threads}")
        if state is not None and not state.get("config"):
            self.logger.info(
                f"[!] {self.checkpoint_path()} stores no config (reference format): read with the "
                "reference implementation's hyperparameters " + " ".join(
                    f"{k}={REFERENCE_ARCH[k]}" for k in ("patch_size", "num_patches",
                                                         "glimpse_scale", "num_glimpses", "std")))
        elif state is not None and adopted:
            self.logger.info("[*] Read with the checkpoint's own " + ", ".join(
                f"{k}={v}" for k, v in adopted.items()) + " (the flags differ)")
        if state is not None and config.is_train:
            stored = state.get("config") or {}
            changed = [f"{k} {getattr(config, k)} (checkpoint: {stored[k]})" for k in TRAIN_KEYS
                       if k in stored and stored[k] != getattr(config, k)]
            if changed:
                self.logger.info("[!] Resuming with other training flags than the checkpoint's: "
                                 + ", ".join(changed))
        if self.world > 1:
            self.logger.info(f"[*] Data parallel: {self.world} processes, "
                             f"{config.batch_size // self.world} images each per global batch "
                             f"of {config.batch_size}")
        self.model = build_model(config)
        self.net = EpisodeLayer(self.model, config.num_glimpses, config.reinforce_weight,
                                rollouts=config.rollouts, baseline=config.baseline)
        if self.world > 1:
            # Broadcasts rank 0's initial weights, then all-reduces (averages) the gradients.
            self.net = paddle.DataParallel(self.net)
            # Same weights, but each rank must draw its own locations.
            paddle.seed(int(np.random.SeedSequence([config.random_seed, self.rank])
                            .generate_state(1)[0]))
        self.scheduler = paddle.optimizer.lr.ReduceOnPlateau(
            learning_rate=config.init_lr, mode="max", factor=config.lr_factor,
            patience=config.lr_patience)
        self.optimizer = paddle.optimizer.Adam(
            learning_rate=self.scheduler, parameters=self.model.parameters(),
            weight_decay=config.weight_decay or None, use_multi_tensor=True,
            grad_clip=nn.ClipGradByGlobalNorm(config.clip_grad) if config.clip_grad else None)
        self.ema = (WeightAverage(self.model, config.ema_decay)
                    if config.ema_decay and config.is_train else None)
        self.epoch, self.best_valid_acc, self.counter, self.elapsed = 0, 0.0, 0, 0.0
        self._stop_requested = False  # set by Ctrl-C / SIGTERM while training
        self._in_step, self._progress = False, None
        self.position, self.last_good = None, None
        # The flag, else the checkpoint's, else the default for a fresh run; None (files from
        # before --eval_std) tests at the training std, as those files were.
        self.eval_std = (config.eval_std if config.eval_std is not None
                         else saved_eval_std(state) if state is not None else EVAL_STD)
        config.eval_std = self.eval_std  # what checkpoints' config and params JSON record
        if state is not None:
            self._restore(state)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_path(self, best=None, epoch=None):
        """The file to load (no arguments: as the flags say) or to write."""
        c = self.config
        if best is None and epoch is None:
            if c.ckpt:
                return c.ckpt
            best = c.best
            epoch = c.last_epoch or self._latest_epoch()
        stem = os.path.join(c.ckpt_dir, model_name(c))
        return f"{stem}_model_best.pdparams" if best else f"{stem}_ckpt{epoch}.pdparams"

    def _latest_epoch(self):
        pattern = os.path.join(self.config.ckpt_dir, model_name(self.config) + "_ckpt*.pdparams")
        epochs = [int(m.group(1)) for p in glob.glob(pattern)
                  if (m := re.search(r"_ckpt(\d+)\.pdparams$", p))]
        return max(epochs, default=0)

    def _check_or_adopt_arch(self, state):
        """Testing, --ckpt and the reference's files adopt the checkpoint's architecture;
        resuming by --ckpt_dir needs flags that match it. Returns what was adopted."""
        flags, path = {k: getattr(self.config, k) for k in ARCH_KEYS}, self.checkpoint_path()
        diff = adopt_arch(self.config, state)
        if diff and self.config.is_train and self.config.ckpt is None and state.get("config"):
            for k in diff:
                setattr(self.config, k, flags[k])
            raise RamError(f"checkpoint {path} was trained with " + ", ".join(
                f"{k}={stored_config(state)[k]} (flags: {flags[k]})" for k in diff)
                + f"; pass matching flags, or --ckpt {path} to adopt its architecture")
        return {k: getattr(self.config, k) for k in diff}

    def _prepare_output_dirs(self):
        """Before training writes anything: the folders exist and take files and none of them
        is a shipped one. A plot folder that takes no files only costs the plots."""
        c = self.config
        for flag in ("--ckpt_dir", "--logs_dir", "--plot_dir"):
            check_not_pretrained(getattr(c, flag[2:]), flag)
        ensure_dir(c.ckpt_dir, "--ckpt_dir")
        ensure_dir(c.logs_dir, "--logs_dir")
        try:
            ensure_dir(c.plot_dir, "--plot_dir")
        except RamError as e:
            print(f"[!] {e}; training goes on without plots")

    def _refuse_to_clobber(self):
        """A fresh run never overwrites another run's checkpoints unless --overwrite True."""
        stem = os.path.join(self.config.ckpt_dir, self.name)
        have = sorted(glob.glob(stem + "_model_best.pdparams") + glob.glob(stem + "_ckpt*.pdparams")
                      + glob.glob(stem + "_interrupted.pdparams"))
        if have and not self.config.overwrite:
            shown = ", ".join(os.path.basename(p) for p in have[:3]) + (" ..." if len(have) > 3 else "")
            raise RamError(f"{self.config.ckpt_dir} already holds checkpoints of {self.name} "
                           f"({shown}); continue that run with --resume=True, train into another "
                           "--ckpt_dir, or replace them with --overwrite True")

    def _restore(self, state):
        load_model_state(self.model, state, self.checkpoint_path(), self.name)
        if self.config.is_train and state.get("raw_state"):
            if self.ema:  # model_state is the average; training continues from raw_state
                self.ema.reset(state.get("ema_steps", 0))
            self.model.set_state_dict(state["raw_state"])
        elif self.ema:
            self.ema.reset()
        self.epoch = int(state.get("epoch", 0))
        self.best_valid_acc = float(state.get("best_valid_acc", 0.0))
        self.counter = int(state.get("counter", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        # An interrupted epoch: the batches it had done and its running sums (resume from
        # the next batch). None at an epoch boundary.
        self.position = state.get("position") if self.config.is_train else None
        self.last_good = self.checkpoint_path() if self.config.is_train else None
        if self.config.is_train and self.world == 1 and state.get("rng_state"):
            # Location noise continues where it stopped: resuming is bit-identical to never
            # having stopped. (Several ranks keep their own per-rank streams instead.)
            paddle.set_rng_state(state["rng_state"])
        if self.config.is_train and state.get("optim_state"):
            optim = _rename_optim_keys(state["optim_state"], {
                k: p.name for k, p in self.model.state_dict().items()})
            if not self.config.resume_lr:  # keep the fresh schedule, starting at init_lr
                optim["LR_Scheduler"] = self.scheduler.state_dict()
            self.optimizer.set_state_dict(optim)

    def save_checkpoint(self, best=False, position=None):
        """Write the training state atomically: the best model, epoch checkpoint `self.epoch`,
        or, with the `position` inside an interrupted epoch, `{name}_interrupted` (never over
        a clean file). Weights that are not finite are never written."""
        self._check_finite_weights()
        state = {
            "epoch": self.epoch,
            "model_state": self.model.state_dict(),
            # Keyed by structured parameter names, so that the file does not depend on the
            # order in which a process happened to create its layers.
            "optim_state": _rename_optim_keys(self.optimizer.state_dict(), {
                p.name: k for k, p in self.model.state_dict().items()}),
            "best_valid_acc": self.best_valid_acc,
            "counter": self.counter,
            "elapsed": self.elapsed,
            "config": vars(self.config).copy(),
            "rng_state": paddle.get_rng_state(),
            "std": self.model.locator.std,
        }
        if self.eval_std is not None:
            state["eval_std"] = self.eval_std
        if self.ema:
            state.update(model_state=self.ema.state_dict(), raw_state=self.model.state_dict(),
                         ema_steps=self.ema.steps)
        path = self.checkpoint_path(best=best, epoch=self.epoch)
        if position is not None:
            state["position"] = position
            path = os.path.join(self.config.ckpt_dir, self.name + "_interrupted.pdparams")
        atomic_save(state, path)
        if not best:
            self.last_good = path
        return path

    def _check_finite_weights(self):
        bad = [k for k, p in self.model.state_dict().items() if not bool(paddle.isfinite(p).all())]
        if bad:
            self._diverged(f"weights of {', '.join(bad[:3])} are not finite")

    def _diverged(self, what, batch=None):
        """Stop training with one line: what diverged, where, and what is left on disk."""
        where = f"epoch {self.epoch + 1}" + (f", batch {batch}" if batch else "")
        best = self.checkpoint_path(best=True)
        kept = [p for p in (self.last_good, best) if p and os.path.isfile(p)]
        kept = (f"the last good checkpoints are {', '.join(dict.fromkeys(kept))}" if kept
                else "no checkpoint had been saved before it")
        raise RamError(f"training diverged ({what}, {where}); nothing was saved from it and "
                       f"{kept}; lower --init_lr (now {self.config.init_lr:g}) or set "
                       "--clip_grad, e.g. 5")

    def _check_loss(self, loss_sum, seen, batch=None):
        """The mean loss so far, as a float, or a divergence error when it is not finite or
        has exploded (a sane hybrid loss is a few units; 1e6 is far past any of them)."""
        mean = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean) or abs(mean) > 1e6:
            self._diverged(f"the training loss is {mean:.3g}", batch)
        return mean

    def save_params_json(self):
        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(vars(self.config), f, indent=2, sort_keys=True)
        atomic_write(os.path.join(self.config.ckpt_dir, self.name + "_params.json"), write)

    # ---------------------------------------------------------------- loops
    def _episode(self, x, y, M=1, l_0=None, noise=None):
        c = self.config
        return rollout_loss(self.model, x, y, c.num_glimpses, M, c.reinforce_weight, l_0, noise)

    def policy_std(self, M=1):
        """The policy std that testing samples fixations at: the eval std for one sample
        per image, the best single guess; M > 1 samples average over the trained policy
        itself, which needs its spread (the training std: M = 10 errs more at 0.02)."""
        return self.model.locator.std if M > 1 or self.eval_std is None else self.eval_std

    @paddle.no_grad()
    def evaluate(self, loader, M=1, passes=1, std=None, seed=None):
        """An Evaluation (mean loss, accuracy %, #correct, search summary: model.SearchMeter)
        over `passes` passes through a loader (each with its own location samples), M
        samples per image at the policy std `std` (None: policy_std(M), as testing does).
        Pass p draws its samples from seed + p (seed None: --random_seed) keyed on each image
        (seeded_batches): the same draws on every call, at any batch size or number of
        ranks, and none from the training run's random stream."""
        self.model.eval()
        seed = self.config.random_seed if seed is None else seed
        loss_sum, correct = paddle.zeros([]), paddle.zeros([])
        search = SearchMeter(self.config.num_glimpses)
        train_std = self.model.locator.std
        self.model.locator.std = self.policy_std(M) if std is None else std
        try:
            for p in range(passes):
                for x, y, l_0, noise, centres in seeded_batches(
                        self.model, loader, self.config.num_glimpses, M, seed + p):
                    ep = self._episode(x, y, M, l_0, noise)
                    loss_sum += ep.loss * x.shape[0]
                    correct += ep.correct
                    search.add(self.model.fixation_pixels(x, ep.locs), centres,
                               ep.log_probas.argmax(1) == y)
        finally:
            self.model.locator.std = train_std
        loss_sum, correct, *totals = self._sum_over_ranks(loss_sum, correct, *search.totals())
        n = loader.num_samples * passes
        correct = int(round(correct))
        return Evaluation(loss_sum / n, 100.0 * correct / n, correct, SearchMeter.summary(totals))

    def validate(self, loader):
        """An epoch's validation, as train runs it: the Evaluation of --valid_passes passes,
        with the averaged weights if --ema_decay."""
        c = self.config
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            # At the training std, on the same draws every epoch (VALID_NOISE_SEED).
            return self.evaluate(loader, c.M, c.valid_passes, self.model.locator.std,
                                 VALID_NOISE_SEED)

    def _sum_over_ranks(self, *values):
        """Python floats of the values ([] tensors or numbers), each summed over the ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        total = paddle.to_tensor([float(v) for v in values], dtype="float64")
        dist.all_reduce(total)
        return total.tolist()

    def train_step(self, x, y, l_0=None, noise=None):
        """One optimisation step on a batch x [B, C, H, W], y [B] (this rank's part of the
        global batch); l_0 [B, 2] and noise [T, B, 2] fix the episode. Returns its Episode."""
        ep = self.net(x, y, l_0, noise)
        self.optimizer.clear_grad(set_to_zero=False)  # free, not zero-fill: backward assigns
        ep.loss.backward()
        self.optimizer.step()
        if self.ema:
            self.ema.update()
        return ep

    def train_one_epoch(self, loader):
        """One pass over the training loader; returns mean loss and accuracy (%). A resumed
        interrupted epoch (self.position) starts at its next batch with its running sums."""
        self.model.train()
        pos, self.position = self.position or {}, None
        start = int(pos.get("batches", 0))
        loss_sum = paddle.to_tensor(np.asarray(pos.get("loss_sum", 0.0), dtype="float32"))
        correct = paddle.to_tensor(np.asarray(pos.get("correct", 0.0), dtype="float32"))
        seen = int(pos.get("seen", 0))
        # What an interruption saves to resume from: until a step completes, where this
        # epoch starts (batch 0, or the restored position).
        self._progress = {"batches": start, "loss_sum": loss_sum, "correct": correct, "seen": seen}
        dump = (self.is_main and self.config.plot_freq
                and (self.epoch + 1) % self.config.plot_freq == 0)
        with tqdm(total=loader.local_samples, initial=seen, desc=f"epoch {self.epoch + 1}",
                  file=sys.stdout, leave=False, mininterval=1.0, dynamic_ncols=True,
                  disable=not self.is_main) as bar:
            for i, (x, y) in enumerate(loader.iterate(start), start):
                self._stop_if_requested()
                self._in_step = True
                ep = self.train_step(x, y)
                B = x.shape[0]
                loss_sum += ep.loss.detach() * B
                correct += ep.correct
                seen += B
                self._in_step = False
                # What an interruption after this batch saves to resume from the next one.
                self._progress = {"batches": i + 1, "loss_sum": loss_sum, "correct": correct,
                                  "seen": seen}
                if dump and i == 0:
                    self.dump_glimpses(x, ep.locs)
                bar.update(B)
                if (i + 1) % self.config.print_freq == 0:  # the only host sync in the loop
                    mean = self._check_loss(loss_sum, seen, i + 1)
                    bar.set_postfix(loss=f"{mean:.3f}", acc=f"{100 * correct.item() / seen:.2f}")
        # _progress stays until the epoch is counted: an interruption during validation
        # resumes at the end of this epoch's batches, not at its start.
        # With several ranks, padding may repeat a few samples: average over what was seen.
        loss_sum, correct, seen = self._sum_over_ranks(loss_sum, correct, seen)
        self._check_loss(loss_sum, seen)
        return loss_sum / seen, 100.0 * correct / seen

    def dump_glimpses(self, x, locs):
        """Save 9 images [9, H, W] and their fixations [T, 9, 2] for plot_glimpses.py; a
        failure to write them is a warning, never the end of training."""
        folder = os.path.join(self.config.plot_dir, self.name)
        try:
            os.makedirs(folder, exist_ok=True)
            for prefix, value in (("g", x[:9, 0]), ("l", locs[:, :9])):
                with open(os.path.join(folder, f"{prefix}_{self.epoch + 1}.p"), "wb") as f:
                    pickle.dump(value.numpy(), f)
        except OSError as e:
            self.logger.info(f"[!] Glimpses of epoch {self.epoch + 1} not saved in {folder}: "
                             f"{e.strerror}; training goes on")

    def _request_stop(self, signum, frame):
        """Ctrl-C or SIGTERM while training: stop at the end of the current step. Raising at
        once could land inside the fused episode's backward, which Paddle runs from C++ and
        would turn into an OSError (no checkpoint), or half-way through Adam's update. A
        second Ctrl-C stops at once; repeated SIGTERMs (the launcher sends several) do not."""
        if self._stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_requested = True

    def _stop_if_requested(self):
        if self._stop_requested:
            raise KeyboardInterrupt

    def train(self, train_loader, valid_loader):
        c = self.config
        if self.epoch >= c.epochs:
            raise RamError(f"--epochs {c.epochs} is not above the {self.epoch} epochs the checkpoint "
                           f"has done; pass a larger total, e.g. --epochs {self.epoch + 100}")
        main = self.is_main
        if main:
            # One training run per checkpoint folder; temporaries of killed runs go.
            self.lock = RunLock(c.ckpt_dir)
            for name in remove_stale_temporaries(c.ckpt_dir):
                self.logger.info(f"[*] Removed {os.path.join(c.ckpt_dir, name)}, left by a run "
                                 "that was killed")
        try:
            self._train(train_loader, valid_loader)
        finally:
            if self.lock:
                self.lock.release()

    def _train(self, train_loader, valid_loader):
        c, main = self.config, self.is_main
        train_loader.shard(self.rank, self.world, pad=True)
        valid_loader.shard(self.rank, self.world, pad=False)
        if main:
            self.save_params_json()
        # SIGTERM (a scheduler's kill, `kill PID`, or paddle.distributed.launch passing on
        # Ctrl-C) gets the same resumable checkpoint as Ctrl-C instead of Paddle's abort.
        # Rank 0 stops at the end of its step; the other ranks carry on meanwhile so that
        # rank 0 never waits in a collective for a dead peer, and end when it is gone.
        self._stop_requested = False
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._request_stop),
                    signal.SIGTERM: signal.signal(
                        signal.SIGTERM, self._request_stop if main else signal.SIG_IGN)}
        writer = None
        if c.use_tensorboard and main:
            from tensorboardX import SummaryWriter
            writer = SummaryWriter(os.path.join(c.logs_dir, self.name))
        resumed_at = f", from batch {self.position['batches'] + 1}" if self.position else ""
        self._check_fused_step(train_loader)
        self.logger.info(f"[*] {self.name} on {self.device}: train on {train_loader.num_samples}, "
                         f"validate on {valid_loader.num_samples} images, "
                         f"epochs {self.epoch + 1}..{c.epochs}{resumed_at}")
        try:
            while self.epoch < c.epochs:
                train_loader.set_epoch(self.epoch)
                lr, std = self.optimizer.get_lr(), self.model.locator.std
                tic = time.time()
                train_loss, train_acc = self.train_one_epoch(train_loader)
                val = self.validate(valid_loader)
                val_loss, val_acc = val.loss, val.acc
                if not math.isfinite(val_loss):
                    self._diverged(f"the validation loss is {val_loss:.3g}")
                self.scheduler.step(val_acc)
                secs = time.time() - tic
                self.epoch += 1
                self._progress = None
                self.elapsed += secs
                is_best = val_acc > self.best_valid_acc
                self.best_valid_acc = max(val_acc, self.best_valid_acc)
                self.counter = 0 if is_best else self.counter + 1
                self.logger.info(
                    f"epoch {self.epoch}/{c.epochs} | lr {lr:.3e} std {std:.3g} | "
                    f"train loss {train_loss:.4f} acc {train_acc:.2f} | val loss {val_loss:.4f} "
                    f"acc {val_acc:.2f} err {100 - val_acc:.2f} | {secs:.1f}s, "
                    f"total {self.elapsed / 60:.1f} min"
                    + (" [*]" if is_best else "")
                    + f" | found {val.search['found']:.1f} err found "
                    f"{val.search['err_found']:.2f} lost {val.search['err_lost']:.2f}")
                if writer:
                    search = val.search
                    scalars = [("train/loss", train_loss), ("train/acc", train_acc),
                               ("val/loss", val_loss), ("val/acc", val_acc), ("lr", lr),
                               ("search/found", search["found"]),
                               ("search/err_found", search["err_found"]),
                               ("search/err_lost", search["err_lost"])]
                    scalars += [(f"search/dist_{t + 1}", d) for t, d in enumerate(search["dist"])]
                    for tag, v in scalars:
                        writer.add_scalar(tag, v, self.epoch)
                if is_best and main:
                    self.save_checkpoint(best=True)
                stop = self.counter > c.train_patience
                if main and (stop or self.epoch % c.save_freq == 0 or self.epoch == c.epochs):
                    self.save_checkpoint()
                if stop:
                    self.logger.info("[!] No improvement in a while, stopping training.")
                    break
        except KeyboardInterrupt:
            if main:
                self._save_interrupted()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if writer:
                writer.close()
        if main:
            self.plot_curves()

    def _check_fused_step(self, loader):
        """The hand-written training step stands in for modules.py's model only where it
        computes the same loss and gradients: checked on one batch before training, which
        falls back to autograd (one log line) where they differ, e.g. after a module changed."""
        net = getattr(self.net, "_layers", self.net)
        if not net.fused:
            return
        loader.set_epoch(self.epoch)
        x, y = next(iter(loader))
        differs = fused_matches_model(self.model, x[:64], y[:64], self.config.num_glimpses,
                                      self.config.reinforce_weight, self.config.random_seed)
        if differs:
            net.fused = False
            self.logger.info(f"[!] The fused training step differs from the model in modules.py "
                             f"({differs}); training with autograd")

    def _save_interrupted(self):
        """After Ctrl-C: the training state and the position inside the epoch, so that a
        resumed run goes on from the next batch exactly as if never stopped."""
        if self._in_step:  # a second Ctrl-C inside a step: the weights are half-updated
            self.logger.info(f"\n[!] Stopped inside a step of epoch {self.epoch + 1}; nothing "
                             f"saved from it (last checkpoint: {self.last_good or 'none'})")
            return
        p = self._progress
        position = {"batches": 0, "loss_sum": 0.0, "correct": 0.0, "seen": 0} if p is None else {
            "batches": p["batches"], "loss_sum": p["loss_sum"].numpy(),
            "correct": p["correct"].numpy(), "seen": p["seen"]}
        path = self.save_checkpoint(position=position)
        self.logger.info(f"\n[!] Interrupted in epoch {self.epoch + 1} after batch "
                         f"{position['batches']}: saved {path}; resume with: python main.py "
                         f"--resume=True --ckpt {path}")

    def plot_curves(self):
        """Learning curves of this model's log (all runs, resumed ones included) as a PNG."""
        if self._draw_curves is None:
            return
        log = os.path.join(self.config.logs_dir, self.name + ".log")
        out = os.path.join(self.config.plot_dir, self.name + "_curves.png")
        try:
            self.logger.info(f"[*] Learning curves: {self._draw_curves(log, out)}")
        except (RamError, OSError) as e:  # nothing to draw, or nowhere: nothing lost
            self.logger.info(f"[!] No learning curves: {e}")

    def test(self, test_loader):
        test_loader.shard(self.rank, self.world, pad=False)
        tic = time.time()
        _, acc, correct, search = self.evaluate(test_loader, self.config.M)
        self.logger.info(f"[*] Evaluated {test_loader.num_samples} images (M={self.config.M}, "
                         f"std {self.policy_std(self.config.M):.3g}) "
                         f"in {time.time() - tic:.1f}s")
        c = self.config
        self.logger.info(f"[*] Checkpoint {self.checkpoint_path()}: epoch {self.epoch}, "
                         f"{self.name}, std {self.model.locator.std:g}, core {c.core}, "
                         f"first fixation {c.first_fixation}, dataset {c.dataset} "
                         f"{c.canvas}x{c.canvas}" + (f" with {c.clutter} pieces" if c.clutter else ""))
        self.logger.info(f"[*] Search: {SearchMeter.describe(search)}")
        self.logger.info(f"[*] Test Acc: {correct}/{test_loader.num_samples} "
                         f"({acc:.2f}% - {100 - acc:.2f}%)")
        return acc
