"""--ema_decay: the moving average of the weights, its checkpoints and its resume."""
import numpy as np
import paddle
import pytest

from _util import log_line, run_main
from test_cli import NAME, load, train_args
from trainer import WeightAverage, build_model
from config import get_config


def small_model():
    paddle.seed(0)
    return build_model(get_config(["--num_glimpses", "2"]))


def params(model):
    return {k: p.numpy().copy() for k, p in model.named_parameters()}


def test_update_is_the_warmed_up_exponential_average():
    """A naive NumPy loop over 5 fake optimiser steps: avg <- d_n avg + (1 - d_n) w_n with
    d_n = min(decay, (1 + n) / (10 + n))."""
    model = small_model()
    ema = WeightAverage(model, 0.3)
    expect = params(model)
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        for k, p in model.named_parameters():
            p.set_value(rng.standard_normal(p.shape).astype("float32"))
        ema.update()
        d = min(0.3, (1 + n) / (10 + n))
        expect = {k: d * expect[k] + (1 - d) * w for k, w in params(model).items()}
    assert ema.steps == 5
    for k, v in ema.state_dict().items():
        np.testing.assert_allclose(v.numpy(), expect[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_applied_swaps_the_average_in_and_the_raw_weights_back():
    model = small_model()
    ema = WeightAverage(model, 0.5)
    for p in model.parameters():
        p.set_value(p.numpy() + 1.0)
    raw = params(model)
    ids = [id(p) for p in model.parameters()]
    with ema.applied():
        inside = params(model)
    for k in raw:
        np.testing.assert_array_equal(inside[k], ema.state_dict()[k].numpy(), err_msg=k)
        assert not np.array_equal(inside[k], raw[k]), k
    assert params(model).keys() == raw.keys()
    for k, v in params(model).items():
        np.testing.assert_array_equal(v, raw[k], err_msg=k)
    assert [id(p) for p in model.parameters()] == ids  # the optimiser's tensors, refilled


def test_training_keeps_the_average_and_resumes_it_exactly(tiny_data, tmp_path):
    """2 epochs straight == 1 epoch + --resume: the same average and raw weights. The file's
    model_state is the average (what validation measured and testing loads), not the raw
    weights, and ema_steps counts every optimiser step."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--plot_freq", "0", "--save_freq", "1", "--ema_decay", "0.9"]
    for d, epochs in ((straight, 2), (split, 1)):
        res = run_main(train_args(tiny_data, d / "ckpt", d, "--epochs", epochs, *common),
                       cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
    res = run_main(train_args(tiny_data, split / "ckpt", split, "--epochs", 2, "--resume=True",
                              "--best", "False", *common), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    a = load(straight / "ckpt" / f"{NAME}_ckpt2.pdparams")
    b = load(split / "ckpt" / f"{NAME}_ckpt2.pdparams")
    assert a["ema_steps"] == b["ema_steps"] == 2 * 17  # ceil(540 / 32) batches per epoch
    for part in ("model_state", "raw_state"):
        for key in a[part]:
            np.testing.assert_array_equal(np.asarray(a[part][key]), np.asarray(b[part][key]),
                                          err_msg=f"{part} {key}")
    differ = [k for k in a["model_state"] if not np.array_equal(
        np.asarray(a["model_state"][k]), np.asarray(a["raw_state"][k]))]
    assert len(differ) == len(a["model_state"])
    val, again = (log_line((d / "logs" / f"{NAME}.log").read_text(), "epoch 2/2").split("|")[3]
                  for d in (straight, split))
    assert val == again


def test_resuming_without_the_average_continues_from_the_raw_weights(tiny_data, tmp_path):
    """A file written with --ema_decay, resumed without it, trains on from raw_state (the
    optimiser's own weights), not from the average; test mode reads the average."""
    from trainer import Trainer
    res = run_main(train_args(tiny_data, tmp_path / "ckpt", tmp_path, "--epochs", 1,
                              "--plot_freq", "0", "--ema_decay", "0.9"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    path = tmp_path / "ckpt" / f"{NAME}_ckpt1.pdparams"
    state = load(path)
    args = [str(a) for a in train_args(tiny_data, tmp_path / "ckpt", tmp_path)]
    for extra, part in ((["--resume=True", "--ckpt", str(path)], "raw_state"),
                        (["--is_train=False", "--ckpt", str(path)], "model_state")):
        trainer = Trainer(get_config(args + extra), "cpu")
        assert trainer.ema is None
        for k, p in trainer.model.named_parameters():
            np.testing.assert_array_equal(p.numpy(), np.asarray(state[part][k]), err_msg=k)


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_ema_decay_outside_the_unit_interval_is_one_line(value, tmp_path):
    res = run_main(["--ema_decay", value, "--data_dir", tmp_path], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: --ema_decay must be in [0, 1) (got {float(value)})"]
