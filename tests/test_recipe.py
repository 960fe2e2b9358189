"""The training recipes beyond the reference: other cores, the first fixation, several rollouts
per image with a leave-one-out baseline, gradient clipping and testing at the policy's mean."""
import math

import numpy as np
import paddle
import pytest

from conftest import acc_lines, run_main
from model import RecurrentAttention
from model import hybrid_loss, rollout_loss

B, T, CLASSES, H = 4, 3, 10, 16


def make_model(seed=0, std=0.1, **kw):
    paddle.seed(seed)
    return RecurrentAttention(4, 2, 2, 1, 16, 8, std, 32, CLASSES, **kw)


def batch(seed=0, n=B):
    rng = np.random.RandomState(seed)
    x = paddle.to_tensor(rng.randn(n, 1, H, H).astype(np.float32))
    y = paddle.to_tensor(rng.randint(0, CLASSES, size=n).astype(np.int64))
    return x, y


def noise(rows, n=B, seed=1):
    return paddle.to_tensor(np.random.RandomState(seed).randn(rows, n, 2).astype(np.float32))


def grads(model, loss, prefix):
    """{name: |grad|.max()} of the parameters under `prefix`, None where none arrived.
    (loss.backward, not paddle.grad: Paddle 3.2's addmm_grad crashes when paddle.grad asks
    for some of a graph's parameters only.)"""
    model.clear_gradients(set_to_zero=False)
    loss.backward()
    return {k: None if p.grad is None else float(np.abs(p.grad.numpy()).max())
            for k, p in model.named_parameters() if k.startswith(prefix)}


# ------------------------------------------------------------------ cores
def test_lstm_core_equations():
    """One LSTM step against the equations written out in NumPy."""
    from modules import CoreNetwork
    paddle.seed(2)
    core = CoreNetwork(6, 5, "lstm")
    rng = np.random.RandomState(2)
    g, h, c = (rng.randn(3, n).astype(np.float32) for n in (6, 5, 5))
    out = core(paddle.to_tensor(g), paddle.to_tensor(np.concatenate([h, c], 1))).numpy()
    W = {k: v.numpy() for k, v in core.state_dict().items()}
    pre = g @ W["i2h.weight"] + W["i2h.bias"] + h @ W["h2h.weight"] + W["h2h.bias"]
    i, f, o, cn = np.split(pre, 4, axis=1)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    c_t = sig(f) * c + sig(i) * np.tanh(cn)
    np.testing.assert_allclose(out[:, 5:], c_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, :5], sig(o) * np.tanh(c_t), rtol=1e-5, atol=1e-6)
    assert core.hidden(paddle.to_tensor(out)).shape == [3, 5]


def test_irnn_starts_at_the_identity():
    from modules import CoreNetwork
    core = CoreNetwork(6, 5, "irnn")
    np.testing.assert_array_equal(core.h2h.weight.numpy(), np.eye(5, dtype=np.float32))
    np.testing.assert_array_equal(core.h2h.bias.numpy(), np.zeros(5, dtype=np.float32))


@pytest.mark.parametrize("core", ["rnn", "lstm"])
@pytest.mark.parametrize("into_core", [False, True])
def test_reinforce_reaches_the_core_only_when_asked(core, into_core):
    model = make_model(3, core=core, reinforce_core=into_core)
    x, y = batch(3)
    log_probas, log_pi, b, _ = model.rollout(x, T, noise=noise(T))
    reinforce = (-log_pi * (1.0 - b.detach())).sum(1).mean()
    got = grads(model, reinforce, "rnn.")
    assert all((g is not None and g > 0) for g in got.values()) == into_core, got
    assert all(g is None or g == 0 for g in got.values()) != into_core, got


# ------------------------------------------------------------------ first fixation
def test_centre_first_fixation_looks_at_the_centre():
    model = make_model(first_fixation="centre")
    _, log_pi, _, locs = model.rollout(batch()[0], T, noise=noise(T))
    np.testing.assert_array_equal(locs[0].numpy(), np.zeros((B, 2), np.float32))
    assert log_pi.shape == [B, T]


def test_learned_first_fixation_is_a_policy_step_on_h0():
    """l_0 = clip(tanh(fc_lt(relu(fc(0)))) + std * noise[0]) with its own log_pi and baseline,
    and its REINFORCE term trains the location network even with a single glimpse."""
    std = 0.1
    model = make_model(4, std=std, first_fixation="learned")
    x, _ = batch(4)
    eps = noise(T + 1)
    _, log_pi, b, locs = model.rollout(x, T, noise=eps)
    assert log_pi.shape == [B, T + 1] and b.shape == [B, T + 1] and locs.shape == [T, B, 2]
    W = {k: v.numpy() for k, v in model.state_dict().items()}
    mu = np.tanh(np.maximum(W["locator.fc.bias"], 0) @ W["locator.fc_lt.weight"]
                 + W["locator.fc_lt.bias"])
    np.testing.assert_allclose(locs[0].numpy(), np.clip(mu + std * eps[0].numpy(), -1, 1),
                               rtol=1e-5, atol=1e-6)
    expect_lp = (-(std * eps[0].numpy()) ** 2 / (2 * std ** 2) - math.log(std)
                 - 0.5 * math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(log_pi[:, 0].numpy(), expect_lp, rtol=1e-5)
    np.testing.assert_allclose(b[:, 0].numpy(), np.full(B, W["baseliner.fc.bias"][0]), rtol=1e-6)
    model = make_model(4, std=std, first_fixation="learned")
    _, log_pi, _, _ = model.rollout(x, 1, noise=eps[:2])
    got = grads(model, -log_pi[:, 0].sum(), "locator.")
    assert got["locator.fc_lt.bias"] > 0  # (relu(fc(0)) = relu(0) at Paddle's zero biases)


# ------------------------------------------------------------------ rollouts and baselines
def test_leave_one_out_baseline():
    """Rollout k of image i is baselined by the mean reward of image i's other rollouts."""
    K, n = 3, 2
    log_probas = paddle.to_tensor(np.log(np.full((K * n, CLASSES), 0.1, np.float32)))
    # Rows k*n + i: rewards 1 0 1 for image 0 and 0 0 1 for image 1.
    correct = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    labels = np.where(correct, 0, 1).astype(np.int64)
    log_probas = log_probas + paddle.to_tensor(np.eye(CLASSES, dtype=np.float32)[[0] * 6])
    log_pi = paddle.to_tensor(np.arange(K * n * 2, dtype=np.float32).reshape(K * n, 2))
    baselines = paddle.zeros([K * n, 2])
    loss, c = hybrid_loss(log_probas, log_pi, baselines, paddle.to_tensor(labels), 1.0, loo=K)
    loss0, _ = hybrid_loss(log_probas, log_pi, baselines, paddle.to_tensor(labels), 0.0)
    r = correct.astype(np.float32).reshape(K, n)
    b_loo = ((r.sum(0, keepdims=True) - r) / (K - 1)).reshape(-1)
    expect = (-log_pi.numpy() * (r.reshape(-1) - b_loo)[:, None]).sum(1).mean()
    assert float(loss) - float(loss0) == pytest.approx(expect, rel=1e-5)


def test_rollouts_are_independent_episodes_of_the_same_images():
    model = make_model(5)
    x, y = batch(5)
    K = 3
    eps = noise(T, K * B)
    l0 = paddle.to_tensor(np.random.RandomState(6).uniform(-1, 1, (K * B, 2)).astype(np.float32))
    ep = rollout_loss(model, x, y, T, rollouts=K, l_0=l0, noise=eps, baseline="loo")
    assert ep.locs.shape == [T, K * B, 2] and ep.log_probas.shape == [K * B, CLASSES]
    # Rollout k is the plain episode of the same images with rows k*B .. k*B + B - 1.
    for k in range(K):
        rows = slice(k * B, (k + 1) * B)
        lp, _, _, locs = model.rollout(x, T, l0[rows], eps[:, rows])
        np.testing.assert_allclose(ep.log_probas[rows].numpy(), lp.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ep.locs[:, rows].numpy(), locs.numpy(), rtol=0, atol=1e-6)
    per_image = (ep.log_probas.argmax(1) == y.tile([K])).astype("float32").sum() / K
    assert float(ep.correct) == pytest.approx(float(per_image))


# ------------------------------------------------------------------ testing at the mean
def test_std_zero_follows_the_mean_deterministically():
    model = make_model(7)
    x, _ = batch(7)
    l0 = paddle.zeros([B, 2])
    paddle.seed(1)
    a = model.rollout(x, T, l0, std=0.0)
    paddle.seed(2)
    b = model.rollout(x, T, l0, std=0.0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    assert float(paddle.abs(a[1]).numpy().max()) == 0.0  # log pi of a deterministic fixation


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_recipe_run_records_its_choices_and_tests_without_flags(tiny_data, tmp_path):
    recipe = ["--core", "lstm", "--first_fixation", "learned", "--rollouts", "2",
              "--reinforce_core", "True", "--reinforce_weight", "1", "--clip_grad", "5"]
    res = run_main(["--data_dir", tiny_data, "--epochs", "1", "--batch_size", "32",
                    "--num_glimpses", "2", "--plot_freq", "0", "--ckpt_dir", tmp_path / "ckpt",
                    "--logs_dir", tmp_path / "logs", "--plot_dir", tmp_path / "plots", *recipe],
                   cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    best = tmp_path / "ckpt" / "ram_2_8x8_1_model_best.pdparams"
    stored = paddle.load(str(best))["config"]
    assert (stored["core"], stored["first_fixation"], stored["rollouts"],
            stored["clip_grad"]) == ("lstm", "learned", 2, 5.0)
    assert "rnn.i2h.weight" in paddle.load(str(best))["model_state"]
    res = run_main(["--is_train=False", "--ckpt", best, "--data_dir", tiny_data, "--eval_std", "0",
                    "--logs_dir", tmp_path / "logs"], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(acc_lines(res.stdout)) == 1
    assert "std 0)" in res.stdout and "core lstm, first fixation learned" in res.stdout


def test_clip_grad_bounds_the_global_norm(tiny_data, tmp_path):
    from config import get_config
    from trainer import Trainer
    config, _ = get_config(["--clip_grad", "0.5", "--num_glimpses", "2", "--ckpt_dir",
                            str(tmp_path / "ckpt"), "--logs_dir", str(tmp_path / "logs"),
                            "--plot_dir", str(tmp_path / "plots")])
    trainer = Trainer(config, "cpu")
    clip = trainer.optimizer._grad_clip
    assert isinstance(clip, paddle.nn.ClipGradByGlobalNorm) and clip.clip_norm == 0.5
    x, y = batch(8)
    x = paddle.nn.functional.interpolate(x, size=[28, 28])
    ep = trainer.net(x, y)
    ep.loss.backward()
    pairs = [(p, p.grad * 1000) for p in trainer.model.parameters() if p.grad is not None]
    clipped = clip(pairs)
    norm = math.sqrt(sum(float((g * g).sum()) for _, g in clipped))
    assert norm == pytest.approx(0.5, rel=1e-4)
