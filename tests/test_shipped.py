"""The shipped 28x28 model: `main.py --is_train=False --best True` reproduces the test errors
logs/pretrained/eval_ram_6_8x8_1.log (and the README) report for it."""
import re
from pathlib import Path

import pytest

from conftest import acc_lines, run_main

pytestmark = pytest.mark.slow  # the shipped model on the whole test set

ROOT = Path(__file__).resolve().parents[1]
LOGGED = ROOT / "logs" / "pretrained" / "eval_ram_6_8x8_1.log"


def logged_correct(seed, M):
    """The correct count that the eval log holds for this seed and M."""
    lines = LOGGED.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(f"--random_seed {seed} --M {M}"):
            for answer in lines[i + 1:]:
                found = re.search(r"Test Acc: (\d+)/10000", answer)
                if found:
                    return int(found.group(1))
                assert not answer.startswith("$"), f"no test accuracy after {line!r}"
    raise AssertionError(f"no seed {seed}, M {M} in {LOGGED}")


@pytest.mark.parametrize("seed, M", [(1, 1), (4, 1), (1, 10)])
def test_shipped_model_reproduces_its_logged_test_accuracy(seed, M, mnist_dir, tmp_path):
    """Three of the logged evaluations. Other thread counts than the log's may round a
    few fixations differently, hence +-3 images."""
    res = run_main(["--is_train=False", "--best", "True", "--ckpt_dir", ROOT / "ckpt" / "pretrained",
                    "--data_dir", mnist_dir, "--logs_dir", tmp_path, "--random_seed", seed,
                    "--M", M], cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    (correct, total, _, _), = acc_lines(res.stdout + res.stderr)
    assert total == 10000
    assert abs(correct - logged_correct(seed, M)) <= 3, (correct, logged_correct(seed, M))
