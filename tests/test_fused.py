"""The fused training episode (trainer.fused_rollout_loss, what train_step runs by default)
against the plain one (rollout_loss under Paddle's autograd): same episode, same gradients."""
import os
import signal

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from config import get_config
from model import RecurrentAttention
from trainer import EpisodeLayer, Trainer, fused_rollout_loss, rollout_loss

B, CLASSES, H, W = 12, 10, 20, 20


def make_model(g, k, s, seed=0, std=0.1, reinforce_core=False):
    paddle.seed(seed)
    return RecurrentAttention(g, k, s, 1, 16, 8, std, 32, CLASSES, reinforce_core=reinforce_core)


def make_batch(T, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(B, 1, H, W).astype(np.float32)
    y = rng.randint(0, CLASSES, size=B).astype(np.int64)
    l0 = rng.uniform(-1, 1, size=(B, 2)).astype(np.float32)
    l0[:2] = [[-1, -1], [1, 1]]  # corners: patches reaching past the image
    noise = (3 * rng.randn(T, B, 2)).astype(np.float32)  # wide: clipped fixations too
    return [paddle.to_tensor(a) for a in (x, y, l0, noise)]


def episode_and_grads(model, episode, T, weight, x, y, l0, noise):
    model.clear_gradients()
    if episode is rollout_loss:
        ep = rollout_loss(model, x, y, T, 1, weight, l0, noise)
    else:
        ep = fused_rollout_loss(model, x, y, T, weight, l0, noise)
    ep.loss.backward()
    return ep, {k: p.grad.numpy().copy() for k, p in model.named_parameters()}


@pytest.mark.parametrize("g, k, s, T, core", [(4, 1, 1, 6, False), (4, 3, 2, 4, False),
                                              (6, 2, 3, 1, False), (4, 1, 1, 6, True),
                                              (4, 3, 2, 4, True)])
def test_fused_episode_equals_the_autograd_episode(g, k, s, T, core):
    """Same fixations and log-probabilities bit for bit, the same loss and correct count, and
    every parameter's gradient equal to float rounding, for one or several scales, T = 1, and
    REINFORCE reaching the core (--reinforce_core) or not."""
    model = make_model(g, k, s, seed=T, reinforce_core=core)
    batch = make_batch(T, seed=k)
    plain, g_plain = episode_and_grads(model, rollout_loss, T, 0.3, *batch)
    fused, g_fused = episode_and_grads(model, fused_rollout_loss, T, 0.3, *batch)
    np.testing.assert_array_equal(fused.locs.numpy(), plain.locs.numpy())
    np.testing.assert_array_equal(fused.log_probas.numpy(), plain.log_probas.numpy())
    assert fused.correct.item() == plain.correct.item()
    assert fused.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert g_fused.keys() == g_plain.keys()
    for key, grad in g_plain.items():
        scale = np.abs(grad).max() + 1e-6
        np.testing.assert_allclose(g_fused[key], grad, rtol=0, atol=1e-5 * scale, err_msg=key)
    assert np.abs(g_plain["rnn.h2h.weight"]).max() > 0 or T == 1  # the test means something


def test_fused_draws_the_same_random_fixations():
    """Without l_0 and noise, both draw them from Paddle's generator, in the same order and
    no more: the next draw after either episode is the same."""
    model = make_model(4, 1, 1)
    x, y, _, _ = make_batch(5)
    paddle.seed(7)
    plain = rollout_loss(model, x, y, 5, 1, 0.01)
    after_plain = paddle.rand([3]).numpy()
    paddle.seed(7)
    fused = fused_rollout_loss(model, x, y, 5, 0.01)
    np.testing.assert_array_equal(fused.locs.numpy(), plain.locs.numpy())
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), after_plain)


def test_training_steps_match(tiny_data, tmp_path):
    """Five Trainer.train_step calls, fused (the default) and plain: the same weights to float
    rounding, and the fused path is what the trainer runs."""
    config = get_config(["--data_dir", str(tiny_data), "--batch_size", "32",
                         "--logs_dir", str(tmp_path), "--ckpt_dir", str(tmp_path)])
    from data_loader import get_train_valid_loader
    weights = {}
    for fused in (True, False):
        paddle.seed(3)
        trainer = Trainer(config, "cpu")
        assert trainer.net.fused
        trainer.net.fused = fused
        loader, _ = get_train_valid_loader(str(tiny_data), 32, 1)
        paddle.seed(11)
        for _, (x, y) in zip(range(5), loader):
            trainer.train_step(x, y)
        weights[fused] = {k: p.numpy() for k, p in trainer.model.named_parameters()}
    for key, w in weights[False].items():
        np.testing.assert_allclose(weights[True][key], w, rtol=1e-4, atol=1e-6, err_msg=key)


def test_reinforce_core_changes_the_fused_gradients_of_the_core_only():
    """The fused episode with --reinforce_core: the same episode, the same gradients for the
    location network, baseline and classifier, and other ones for the core and glimpse
    networks (so the routing is not ignored)."""
    batch = make_batch(4)
    grads = {}
    for core in (False, True):
        model = make_model(4, 1, 1, seed=5, reinforce_core=core)
        assert EpisodeLayer(model, 4, 0.3).fused
        _, grads[core] = episode_and_grads(model, fused_rollout_loss, 4, 0.3, *batch)
    for key, grad in grads[False].items():
        same = key.startswith(("locator.", "baseliner.", "classifier."))
        assert np.array_equal(grads[True][key], grad) == same, key


def test_relu_mask_without_paddles_kernel_is_the_same(monkeypatch):
    """Where a Paddle build lacks _C_ops.relu_grad, the fallback gives the same gradient."""
    import trainer
    out = paddle.nn.functional.relu(paddle.randn([7, 5]))
    grad = paddle.randn([7, 5])
    assert trainer._relu_grad is not None  # this build has it: the test compares both
    kernel = trainer._relu_mask(grad, out).numpy()
    monkeypatch.setattr(trainer, "_relu_grad", None)
    np.testing.assert_array_equal(trainer._relu_mask(grad, out).numpy(), kernel)
    assert (kernel == 0).any() and (kernel != 0).any()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_inside_the_fused_backward_still_saves(signum, tiny_data, tmp_path,
                                                         monkeypatch):
    """Ctrl-C (or SIGTERM) arriving while Paddle runs the hand-written backward from C++:
    training stops after that step and writes the resumable checkpoint, instead of dying
    on Paddle's wrapped KeyboardInterrupt (an OSError)."""
    import trainer as trainer_module
    from data_loader import get_train_valid_loader
    backward = trainer_module._FusedEpisode.backward
    calls = []

    def interrupted_backward(ctx, *grads):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)
        return backward(ctx, *grads)

    monkeypatch.setattr(trainer_module._FusedEpisode, "backward",
                        staticmethod(interrupted_backward))
    config = get_config([str(a) for a in [
        "--data_dir", tiny_data, "--batch_size", "32", "--num_glimpses", "2", "--epochs", "3",
        "--plot_freq", "0", "--ckpt_dir", tmp_path / "ckpt", "--logs_dir", tmp_path / "logs",
        "--plot_dir", tmp_path / "plots"]])
    trainer = Trainer(config, "cpu")
    train, valid = get_train_valid_loader(str(tiny_data), 32, 1)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in the background
    trainer.train(train, valid)
    assert len(calls) == 3  # the step that was under way finished; no further step began
    saved = paddle.load(str(tmp_path / "ckpt" / "ram_2_8x8_1_interrupted.pdparams"))
    assert saved["epoch"] == 0
    assert "[!] Interrupted in epoch 1" in (tmp_path / "logs" / "ram_2_8x8_1.log").read_text()
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_training_checks_the_fused_step_against_modules_and_falls_back(tiny_data, tmp_path,
                                                                      monkeypatch):
    """Before training, the fused step is compared with the model of modules.py on one batch:
    as shipped they agree and training runs fused; once a module changes (here the
    classifier's logits are doubled), training says so and runs autograd through it."""
    import main as main_module
    import modules
    from trainer import Trainer
    used = []
    step = Trainer.train_step

    def spy(self, *a, **k):
        used.append(self.net.fused)
        return step(self, *a, **k)

    monkeypatch.setattr(Trainer, "train_step", spy)

    def run(work):
        args = ["--data_dir", tiny_data, "--epochs", "1", "--batch_size", "64", "--num_glimpses",
                "2", "--plot_freq", "0", "--ckpt_dir", work / "ckpt", "--logs_dir", work / "logs",
                "--plot_dir", work / "plots"]
        assert main_module.main([str(a) for a in args]) == 0
        return (work / "logs" / "ram_2_8x8_1.log").read_text()

    log = run(tmp_path / "as_shipped")
    assert "differs from the model" not in log and used and all(used)
    used.clear()

    def doubled(self, h_t):
        return F.log_softmax(2.0 * modules.linear_sum((self.fc, h_t)), axis=1)

    monkeypatch.setattr(modules.ActionNetwork, "forward", doubled)
    log = run(tmp_path / "changed")
    assert "[!] The fused training step differs from the model in modules.py" in log
    assert "training with autograd" in log and used and not any(used)
