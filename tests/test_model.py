"""RecurrentAttention and model.rollout_loss: numerics, injectable randomness, gradient routing."""
import math

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import np_params, np_rollout
from model import RecurrentAttention
from model import rollout_loss

G, K, S, STD = 4, 2, 2, 0.1
B, T, CLASSES, H, W = 6, 3, 10, 14, 14


def make_model(seed=0, std=STD):
    paddle.seed(seed)
    return RecurrentAttention(G, K, S, 1, 16, 8, std, 32, CLASSES)


def make_batch(seed=0, n=B, T_=T):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 1, H, W).astype(np.float32)
    y = rng.randint(0, CLASSES, size=n).astype(np.int64)
    l0 = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    noise = rng.randn(T_, n, 2).astype(np.float32)
    return x, y, l0, noise


def t(a):
    return paddle.to_tensor(a)


def rollout_np(model, x, l0, noise, T_=T):
    out = model.rollout(t(x), T_, t(l0), t(noise))
    return [o.numpy() for o in out]


# ------------------------------------------------------------------ shapes and numerics
def test_rollout_shapes():
    x, _, l0, noise = make_batch()
    lp, log_pi, b, locs = rollout_np(make_model(), x, l0, noise)
    assert lp.shape == (B, CLASSES) and log_pi.shape == (B, T)
    assert b.shape == (B, T) and locs.shape == (T, B, 2)
    np.testing.assert_allclose(np.exp(lp).sum(1), np.ones(B), rtol=1e-5)
    np.testing.assert_array_equal(locs[0], l0)          # locs[0] is l_0


def test_rollout_matches_numpy_reimplementation():
    """A loop-based NumPy RAM (own retina, own layers) reproduces the whole episode."""
    model = make_model(3)
    x, _, l0, noise = make_batch(3)
    lp, log_pi, b, locs = rollout_np(model, x, l0, noise)
    e_lp, e_log_pi, e_b, e_locs = np_rollout(np_params(model), x, T, l0, noise, G, K, S, STD)
    np.testing.assert_allclose(locs, e_locs, rtol=0, atol=2e-5)
    np.testing.assert_allclose(lp, e_lp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_pi, e_log_pi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b, e_b, rtol=1e-4, atol=1e-5)


def test_linear_sum_equals_nn_linear_in_values_and_gradients():
    """The addmm chain behind every layer gives nn.Linear's sums and the same gradients for
    inputs, weights and biases (to float rounding)."""
    from modules import linear_sum
    paddle.seed(4)
    layers = [paddle.nn.Linear(n, 24) for n in (40, 3)]
    rng = np.random.RandomState(4)
    xs = [t(rng.randn(32, n).astype(np.float32)) for n in (40, 3)]
    g = t(rng.randn(32, 24).astype(np.float32))
    grads = []
    for f in (lambda: linear_sum(*zip(layers, xs)), lambda: layers[0](xs[0]) + layers[1](xs[1]),
              lambda: linear_sum((layers[0], xs[0])), lambda: layers[0](xs[0])):
        for x in xs:
            x.stop_gradient = False
        out = f()
        ins = xs + [p for layer in layers for p in (layer.weight, layer.bias)]
        grads.append([out] + paddle.grad(out, ins, g, allow_unused=True))
    for fused, plain in ((grads[0], grads[1]), (grads[2], grads[3])):
        assert len(fused) == len(plain)
        for a, b in zip(fused, plain):
            if b is None:                                     # layer 1 unused in the single case
                assert a is None
                continue
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ injectable randomness
def test_same_l0_and_noise_give_identical_rollouts():
    model = make_model(1)
    x, _, l0, noise = make_batch(1)
    first = rollout_np(model, x, l0, noise)
    paddle.seed(12345)                      # the global generator must not matter
    second = rollout_np(model, x, l0, noise)
    for a, b_ in zip(first, second):
        np.testing.assert_array_equal(a, b_)
    other = rollout_np(model, x, l0, noise + 0.5)
    assert not np.array_equal(first[3][1:], other[3][1:])


def test_seeded_generator_without_injected_noise_is_repeatable():
    model = make_model(1)
    x = t(make_batch(1)[0])
    paddle.seed(7)
    a = [o.numpy() for o in model.rollout(x, T)]
    paddle.seed(7)
    b = [o.numpy() for o in model.rollout(x, T)]
    paddle.seed(8)
    c = [o.numpy() for o in model.rollout(x, T)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert np.all(np.abs(a[3]) <= 1.0)
    assert not np.array_equal(a[3][0], c[3][0])          # l_0 drawn from the generator


def policy_means(model, x, l0, T_=T):
    """mu_t = tanh(fc_lt(relu(fc(h_t)))) computed in NumPy along the zero-noise episode."""
    P = np_params(model)
    zero = np.zeros((T_, len(x), 2), dtype=np.float32)
    # with zero noise, l_{t+1} = mu_t; rerun the NumPy episode and read its locations
    _, _, _, locs = np_rollout(P, x, T_, l0, zero, G, K, S, STD)
    return locs


def test_zero_noise_locations_are_the_policy_mean():
    model = make_model(2)
    x, _, l0, _ = make_batch(2)
    zero = np.zeros((T, B, 2), dtype=np.float32)
    _, log_pi, _, locs = rollout_np(model, x, l0, zero)
    np.testing.assert_allclose(locs, policy_means(model, x, l0), atol=2e-5)
    assert np.all(np.abs(locs[1:]) < 1.0)                # tanh mean: strictly inside
    # log N(mu; mu, std) per axis = -log(std) - 0.5 log(2 pi); two axes
    expected = -2 * math.log(STD) - math.log(2 * math.pi)
    np.testing.assert_allclose(log_pi, np.full((B, T), expected), rtol=1e-6)
    assert expected == pytest.approx(2.7672, abs=1e-4)


def test_large_noise_clips_locations_but_log_pi_uses_the_unclipped_sample():
    model = make_model(2)
    x, _, l0, _ = make_batch(2)
    noise = np.full((T, B, 2), 50.0, dtype=np.float32)
    noise[:, ::2, 1] = -50.0
    _, log_pi, _, locs = rollout_np(model, x, l0, noise)
    np.testing.assert_array_equal(locs[1:], np.clip(np.sign(noise[:-1]), -1, 1))
    per_axis = -(50.0 * STD) ** 2 / (2 * STD ** 2) - math.log(STD) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(log_pi, np.full((B, T), 2 * per_axis), rtol=1e-4)
    assert 2 * per_axis == pytest.approx(-2497.2328, abs=1e-3)


def test_log_pi_is_the_gaussian_log_density_of_the_noise():
    model = make_model(4)
    x, _, l0, noise = make_batch(4)
    _, log_pi, _, _ = rollout_np(model, x, l0, noise)
    per_axis = (-(noise * STD) ** 2 / (2 * STD ** 2) - math.log(STD)
                - 0.5 * math.log(2 * math.pi))                # [T, B, 2]
    np.testing.assert_allclose(log_pi, per_axis.sum(2).T, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ rollout_loss
def manual_loss(lp, log_pi, b, y, weight):
    """The hybrid loss in NumPy from (averaged) episode outputs."""
    R = (lp.argmax(1) == y).astype(np.float64)[:, None] * np.ones_like(b)
    nll = -lp[np.arange(len(y)), y].mean()
    mse = ((b - R) ** 2).mean()
    reinforce = (-log_pi * (R - b)).sum(1).mean()
    return nll + mse + weight * reinforce, R[:, 0].sum()


def test_rollout_loss_m1_matches_manual_loss():
    model = make_model(5)
    x, y, l0, noise = make_batch(5)
    ep = rollout_loss(model, t(x), t(y), T, M=1, reinforce_weight=0.3, l_0=t(l0), noise=t(noise))
    lp, log_pi, b, locs = rollout_np(model, x, l0, noise)
    loss, correct = manual_loss(lp, log_pi, b, y, 0.3)
    assert ep.loss.item() == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert ep.correct.item() == correct
    np.testing.assert_allclose(ep.log_probas.numpy(), lp, rtol=1e-6)
    np.testing.assert_array_equal(ep.locs.numpy(), locs)


def test_rollout_loss_m3_averages_the_three_copies():
    M = 3
    model = make_model(6)
    x, y, _, _ = make_batch(6)
    rng = np.random.RandomState(60)
    l0 = rng.uniform(-1, 1, size=(M * B, 2)).astype(np.float32)
    noise = rng.randn(T, M * B, 2).astype(np.float32)
    ep = rollout_loss(model, t(x), t(y), T, M=M, reinforce_weight=0.01, l_0=t(l0), noise=t(noise))
    # copy m of image b is row m*B + b: roll out each copy separately on the untiled batch
    copies = [rollout_np(model, x, l0[m * B:(m + 1) * B], noise[:, m * B:(m + 1) * B])
              for m in range(M)]
    lp, log_pi, b = (np.mean([c[i] for c in copies], axis=0) for i in range(3))
    np.testing.assert_allclose(ep.log_probas.numpy(), lp, rtol=1e-5, atol=1e-6)
    assert list(ep.locs.shape) == [T, M * B, 2]
    for m in range(M):
        np.testing.assert_allclose(ep.locs.numpy()[:, m * B:(m + 1) * B], copies[m][3], atol=1e-6)
    loss, correct = manual_loss(lp, log_pi, b, y, 0.01)
    assert ep.loss.item() == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert ep.correct.item() == correct
    # averaging really happened: the copies disagree with each other
    assert not np.allclose(copies[0][0], copies[1][0])


# ------------------------------------------------------------------ gradient routing
def loss_terms(model, seed=7):
    x, y, l0, noise = make_batch(seed)
    lp, log_pi, b, _ = model.rollout(t(x), T, t(l0), t(noise))
    R = (lp.argmax(1) == t(y)).astype("float32").unsqueeze(1).expand(b.shape)
    nll = F.nll_loss(lp, t(y))
    reinforce = (-log_pi * (R - b.detach())).sum(1).mean()
    mse = F.mse_loss(b, R)
    return {"nll": nll, "reinforce": reinforce, "mse": mse}, (x, y, l0, noise)


def grads_of(loss, model):
    names, params = zip(*model.named_parameters())
    gs = paddle.grad([loss], list(params), retain_graph=True, allow_unused=True)
    return {n: None if g is None else g.numpy() for n, g in zip(names, gs)}


def is_zero(g):
    return g is None or not np.any(g)


def prefixed(grads, *prefixes):
    picked = {n: g for n, g in grads.items() if n.startswith(prefixes)}
    assert picked, prefixes
    return picked


@pytest.fixture(scope="module")
def routed():
    model = make_model(8)
    terms, batch = loss_terms(model)
    return model, {k: grads_of(v, model) for k, v in terms.items()}, batch


def test_classification_loss_skips_locator_and_baseliner(routed):
    _, g, _ = routed
    for n, v in prefixed(g["nll"], "locator.", "baseliner.").items():
        assert is_zero(v), n
    for n in ("sensor.fc1.weight", "rnn.h2h.weight", "rnn.i2h.weight", "classifier.fc.weight"):
        assert not is_zero(g["nll"][n]), n


def test_reinforce_trains_only_the_locator(routed):
    _, g, _ = routed
    assert not is_zero(g["reinforce"]["locator.fc_lt.weight"])
    assert not is_zero(g["reinforce"]["locator.fc.weight"])
    for n, v in prefixed(g["reinforce"], "sensor.", "rnn.", "classifier.", "baseliner.").items():
        assert is_zero(v), n


def test_reinforce_core_routes_reinforce_into_core_and_glimpse_net_only():
    """--reinforce_core: the same episode (same outputs), but REINFORCE now also trains the
    core and glimpse networks; still never the classifier or the baseline."""
    paddle.seed(8)
    model = RecurrentAttention(G, K, S, 1, 16, 8, STD, 32, CLASSES, reinforce_core=True)
    model.set_state_dict(make_model(8).state_dict())
    terms, (x, _, l0, noise) = loss_terms(model)
    reference = rollout_np(make_model(8), x, l0, noise)
    for ours, ref in zip(rollout_np(model, x, l0, noise), reference):
        np.testing.assert_array_equal(ours, ref)
    g = grads_of(terms["reinforce"], model)
    for n in ("locator.fc.weight", "rnn.h2h.weight", "rnn.i2h.weight", "sensor.fc1.weight",
              "sensor.fc3.weight", "sensor.fc4.weight"):
        assert not is_zero(g[n]), n
    for n, v in prefixed(g, "classifier.", "baseliner.").items():
        assert is_zero(v), n


def test_baseline_mse_trains_only_the_baseliner(routed):
    _, g, _ = routed
    assert not is_zero(g["mse"]["baseliner.fc.weight"])
    assert not is_zero(g["mse"]["baseliner.fc.bias"])
    for n, v in prefixed(g["mse"], "sensor.", "rnn.", "locator.", "classifier.").items():
        assert is_zero(v), n


def test_rollout_loss_gradient_is_the_weighted_sum_of_the_parts(routed):
    model, g, (x, y, l0, noise) = routed
    weight = 0.25
    ep = rollout_loss(model, t(x), t(y), T, reinforce_weight=weight, l_0=t(l0), noise=t(noise))
    total = grads_of(ep.loss, model)
    for n in total:
        parts = [g[k][n] for k in ("nll", "mse")] + [None if g["reinforce"][n] is None
                                                     else weight * g["reinforce"][n]]
        expected = sum((p for p in parts if p is not None), np.zeros_like(model.state_dict()[n].numpy()))
        got = np.zeros_like(expected) if total[n] is None else total[n]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7, err_msg=n)
    assert not is_zero(total["locator.fc_lt.weight"])
