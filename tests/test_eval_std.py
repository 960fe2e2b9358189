"""--eval_std: testing and validation sample fixations at their own std; training
keeps --std."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import data_loader
from conftest import cli_env, run_main
from config import EVAL_STD, get_config
from model import rollout_loss
from model import seeded_batches
from trainer import Trainer
from utils import set_seed

ROOT = Path(__file__).resolve().parents[1]


def trainer_and_loader(tmp_path, *flags):
    config, _ = get_config(["--num_glimpses", "2", "--logs_dir", str(tmp_path / "logs"), *flags])
    set_seed(0)
    trainer = Trainer(config)
    rng = np.random.default_rng(0)
    images = rng.random((40, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 40)
    return trainer, data_loader.make_loader(images, labels, 16)


def loss_at(model, loader, std, seed, M=1):
    """Mean loss of one pass at policy std `std`: what evaluate() must match."""
    with paddle.no_grad():
        total = sum(float(rollout_loss(model, x, y, 2, M, l_0=l_0, noise=noise, std=std).loss)
                    * x.shape[0]
                    for x, y, l_0, noise, _ in seeded_batches(model, loader, 2, M, seed))
    return total / loader.num_samples


def test_evaluate_samples_at_the_eval_std_and_training_keeps_its_std(tmp_path):
    trainer, loader = trainer_and_loader(tmp_path, "--eval_std", "0.03")
    loss, *_ = trainer.evaluate(loader, seed=7)
    assert trainer.model.locator.std == 0.1  # training goes on with --std's exploration
    assert loss == pytest.approx(loss_at(trainer.model, loader, 0.03, 7), rel=1e-6)
    assert loss != pytest.approx(loss_at(trainer.model, loader, 0.1, 7), rel=1e-6)


@pytest.mark.slow
def test_validation_during_training_samples_at_the_training_std(tmp_path, monkeypatch):
    """--eval_std is for testing: the validation of train() samples at --std, in eval mode."""
    import model as model_module
    import trainer as trainer_module
    trainer, loader = trainer_and_loader(tmp_path, "--eval_std", "0.03", "--epochs", "1",
                                         "--ckpt_dir", str(tmp_path), "--plot_freq", "0",
                                         "--plot_dir", str(tmp_path / "plots"))
    seen = []
    episode = model_module.rollout_loss

    def spy(model, *args, std=None, **kwargs):
        seen.append((model.training, std))
        return episode(model, *args, std=std, **kwargs)

    monkeypatch.setattr(trainer_module, "rollout_loss", spy)   # training's episodes
    monkeypatch.setattr(model_module, "rollout_loss", spy)     # evaluate's
    trainer.train(loader, loader)
    assert (True, None) in seen                        # training: the training std
    assert [s for s in seen if not s[0]] == [(False, 0.1)] * 3   # validation, 3 batches


def test_m_samples_average_over_the_policy_at_its_training_std(tmp_path):
    trainer, loader = trainer_and_loader(tmp_path, "--eval_std", "0.03")
    loss, *_ = trainer.evaluate(loader, M=3, seed=7)
    assert loss == pytest.approx(loss_at(trainer.model, loader, 0.1, 7, M=3), rel=1e-6)


def test_a_fresh_run_tests_at_the_default_eval_std(tmp_path):
    trainer, loader = trainer_and_loader(tmp_path)
    assert trainer.config.eval_std == EVAL_STD
    loss, *_ = trainer.evaluate(loader, seed=7)
    assert loss == pytest.approx(loss_at(trainer.model, loader, EVAL_STD, 7), rel=1e-6)


@pytest.mark.parametrize("flag,value,bound", [("--eval_std", "-0.1", ">= 0")])
def test_eval_and_valid_std_bounds(tmp_path, flag, value, bound):
    res = run_main([flag, value, "--logs_dir", tmp_path], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {flag} must be {bound} (got {float(value)})"]


@pytest.mark.slow
def test_eval_noise_sweeps_stds_on_the_validation_split(tiny_run, tiny_data):
    best = tiny_run.ckpt_dir / "ram_2_8x8_1_model_best.pdparams"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval_noise.py"), "--ckpt", str(best),
         "--split", "valid", "--stds", "0.05", "--seeds", "1", "2", "--data_dir", str(tiny_data),
         "--batch_size", "32"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [l for l in res.stdout.splitlines() if l.startswith("| ram_2_8x8_1")]
    assert [r.split("|")[2].strip() for r in rows] == [f"{EVAL_STD:g} (saved)", "0.05"]
    for r in rows:  # M = 1 and M = 10 cells: mean (min-max) over the two seeds
        cells = [c.strip() for c in r.split("|")[3:5]]
        assert all(c.count("(") == 1 and c.endswith(")") for c in cells), r


@pytest.mark.slow
def test_validation_loader_uses_the_split_the_checkpoint_stores(tiny_run, tiny_data, tmp_path):
    """A run trained with --random_seed 3 --valid_size 0.2 is scored on its own held-out
    images, not on those of config.py's defaults."""
    from data_loader import load_mnist, split_indices
    from checkpoint import load_model
    from data_loader import validation_loader
    state = paddle.load(str(tiny_run.ckpt_dir / "ram_2_8x8_1_model_best.pdparams"))
    state["config"].update(random_seed=3, valid_size=0.2)
    path = str(tmp_path / "seed3.pdparams")
    paddle.save(state, path)
    loader = validation_loader(load_model(path)[1], str(tiny_data), 1000)
    _, labels = load_mnist(str(tiny_data), "train")
    _, valid_idx = split_indices(len(labels), 0.2, 3)
    (_, y), = list(loader)
    assert loader.num_samples == len(valid_idx) == 120
    np.testing.assert_array_equal(y.numpy(), labels[valid_idx])
