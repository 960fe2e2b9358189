"""The published reference checkpoint: strict loading and its MNIST test accuracy via the CLI."""
import numpy as np
import paddle
import pytest

from conftest import acc_lines, run_main
from model import RecurrentAttention

pytestmark = pytest.mark.slow  # the reference checkpoint on the whole test set

EXPECTED_SHAPES = {
    "sensor.fc1.weight": [64, 128], "sensor.fc1.bias": [128],
    "sensor.fc2.weight": [2, 128], "sensor.fc2.bias": [128],
    "sensor.fc3.weight": [128, 256], "sensor.fc3.bias": [256],
    "sensor.fc4.weight": [128, 256], "sensor.fc4.bias": [256],
    "rnn.i2h.weight": [256, 256], "rnn.i2h.bias": [256],
    "rnn.h2h.weight": [256, 256], "rnn.h2h.bias": [256],
    "locator.fc.weight": [256, 128], "locator.fc.bias": [128],
    "locator.fc_lt.weight": [128, 2], "locator.fc_lt.bias": [2],
    "classifier.fc.weight": [256, 10], "classifier.fc.bias": [10],
    "baseliner.fc.weight": [256, 1], "baseliner.fc.bias": [1],
}


@pytest.fixture(scope="module")
def reference_state(reference_ckpt):
    return paddle.load(str(reference_ckpt))


def test_reference_checkpoint_loads_strictly(reference_state):
    state = reference_state
    assert int(state["epoch"]) == 290
    assert float(state["best_valid_acc"]) == pytest.approx(98.917, abs=1e-3)
    theirs = state["model_state"]
    model = RecurrentAttention(8, 1, 1, 1, 128, 128, 0.05, 256, 10)
    own = model.state_dict()
    assert set(own) == set(theirs) == set(EXPECTED_SHAPES)
    for k, v in own.items():
        assert list(v.shape) == list(theirs[k].shape) == EXPECTED_SHAPES[k], k
    model.set_state_dict(theirs)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), np.asarray(theirs[k]), err_msg=k)


SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def reference_runs(reference_ckpt, mnist_dir, tmp_path_factory):
    """The reference's own command, `main.py --is_train=False --best True`, on the real test
    set, once per seed. The file stores no config: it is read with the reference's
    hyperparameters (std 0.05 among them), without extra flags."""
    work = tmp_path_factory.mktemp("reference_cli")
    ckpt_dir = work / "ckpt"
    ckpt_dir.mkdir()
    (ckpt_dir / reference_ckpt.name).symlink_to(reference_ckpt)
    runs = {}
    for seed in SEEDS:
        logs = work / f"logs{seed}"
        res = run_main(["--is_train=False", "--best", "True", "--ckpt_dir", ckpt_dir,
                        "--data_dir", mnist_dir, "--logs_dir", logs, "--random_seed", seed],
                       cwd=work, timeout=180)
        runs[seed] = (res, logs)
    return runs


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_cli_prints_one_test_acc_line(reference_runs, seed):
    res, logs = reference_runs[seed]
    assert res.returncode == 0, res.stdout + res.stderr
    lines = acc_lines(res.stdout)
    assert len(lines) == 1, res.stdout
    correct, n, acc, err = lines[0]
    assert n == 10000
    assert acc == pytest.approx(100.0 * correct / n, abs=0.006)
    assert err == pytest.approx(100.0 - acc, abs=0.011)
    assert correct > 9800                        # every seed is close to the published 1.18%
    log = (logs / "ram_6_8x8_1_test.log").read_text()
    assert len(acc_lines(log)) == 1 and acc_lines(log)[0] == lines[0]
    assert "stores no config (reference format)" in res.stdout and "std=0.05" in res.stdout


def test_reference_mean_test_error_over_three_seeds(reference_runs):
    errors = []
    for seed in SEEDS:
        res, _ = reference_runs[seed]
        lines = acc_lines(res.stdout)
        assert res.returncode == 0 and len(lines) == 1, res.stdout + res.stderr
        correct, n, _, _ = lines[0]
        errors.append(100.0 * (n - correct) / n)
    assert np.mean(errors) <= 1.30, errors
    assert len(set(errors)) > 1, errors        # --random_seed reaches l_0 and the location noise
