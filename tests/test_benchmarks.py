"""The benchmark scripts run end to end on tiny budgets (their numbers are not checked)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env

pytestmark = pytest.mark.slow  # each runs a benchmark script end to end
ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script, *args, timeout=300):
    """Run benchmarks/<script> with these arguments; the CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)


def test_train_speed_prints_rates_floor_and_parts(tiny_data):
    res = run_benchmark("train_speed.py", "--batch_sizes", "16", "--windows", "2", "--steps",
                        "2", "--parts", "--data_dir", tiny_data)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(r"samples/s: \d+", lines[-1]), lines[-1]
    def reported(prefix, *words):
        return any(l.startswith(prefix) and all(w in l for w in words) for l in lines)
    assert reported("batch 16: ", "samples/s", "floor"), res.stdout
    assert reported("batch 16, ms per step: ", "forward", "backward", "optimiser"), res.stdout


def test_canvas_cost_times_both_tasks_at_each_scale(tiny_data):
    res = run_benchmark("canvas_cost.py", "--scales", "2", "3", "--batch_size", "8",
                        "--batches", "1", "--repeats", "1", "--data_dir", tiny_data)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = re.findall(r"^\| (translated 60x60|cluttered 100x100) \| (\d) \|", res.stdout, re.M)
    assert rows == [("translated 60x60", "2"), ("cluttered 100x100", "2"),
                    ("translated 60x60", "3"), ("cluttered 100x100", "3")], res.stdout
    assert re.fullmatch(r"ratio: [\d.]+", res.stdout.strip().splitlines()[-1]), res.stdout


def test_ab_step_pairs_windows_of_two_versions(tiny_data):
    """This checkout against its own HEAD: both workers run, the ratio is printed."""
    res = run_benchmark("ab_step.py", "--base", "HEAD", "--batch_sizes", "16", "--rounds", "2",
                        "--steps", "2", "--settle", "0", "--data_dir", tiny_data)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: [\d.]+", lines[-1]), lines[-1]
    assert lines[-2].startswith("batch 16: base ") and "base/this" in lines[-2], lines[-2]


def test_ab_step_names_a_bad_commit_in_one_line():
    res = run_benchmark("ab_step.py", "--base", "no-such-commit", timeout=60)
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: git rev-parse"), res.stderr


@pytest.mark.parametrize("flags, std", [([], "0.02"), (["--eval_std", "0.07"], "0.07")])
def test_time_to_accuracy_reads_every_epoch_checkpoint_and_the_log(tiny_run, tiny_data, flags,
                                                                   std):
    """Every epoch checkpoint at the eval std it stores (0.02, the default), or at --eval_std."""
    res = run_benchmark("time_to_accuracy.py", "--ckpt_dir", tiny_run.ckpt_dir, "--name",
                        "ram_2_8x8_1", "--log", tiny_run.logs_dir / "ram_2_8x8_1.log",
                        "--passes", "2", "--target_err", "100", "--data_dir", tiny_data,
                        "--batch_size", "32", *flags)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) min \|$", res.stdout, re.M)
    assert [(e, s) for e, s, _, _ in rows] == [("1", std), ("2", std)], res.stdout
    assert res.stdout.strip().endswith("epoch 1, " + rows[0][3] + " min")


def test_time_to_accuracy_without_checkpoints_is_one_line(tmp_path):
    res = run_benchmark("time_to_accuracy.py", "--ckpt_dir", tmp_path, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: no epoch checkpoints ram_6_8x8_1_ckpt<N>.pdparams in {tmp_path}; point "
        "--ckpt_dir at a training run's ckpt/"]


FAKE_REFERENCE = {
    "config.py": """
import argparse
parser = argparse.ArgumentParser()
for flag in ("--use_gpu", "--logs_dir"):
    parser.add_argument(flag)
parser.add_argument("--random_seed", type=int, default=1)
parser.add_argument("--valid_size", type=float, default=0.1)
parser.add_argument("--batch_size", type=int, default=128)
""",
    "trainer.py": """
from tensorboard_logger import configure, log_value  # as the reference's does
class Trainer:
    def __init__(self, config, data_loader):
        self.train_loader, self.valid_loader = data_loader
    def train_one_epoch(self, epoch):
        return sum(int(x.shape[0]) for x, _ in self.train_loader)
    def validate(self, epoch):
        return sum(int(x.shape[0]) for x, _ in self.valid_loader)
"""}


def test_reference_speed_runs_a_reference_checkout_beside_ours(tiny_data, tmp_path):
    """A stand-in for the reference's checkout (its Trainer's interface, nothing learnt): both
    workers run their windows and the epoch times turn into the time-to-accuracy ratio."""
    for name, text in FAKE_REFERENCE.items():
        (tmp_path / name).write_text(text)
    res = run_benchmark("reference_speed.py", "--ref_dir", tmp_path, "--images", "90",
                        "--rounds", "1", "--data_dir", tiny_data)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].endswith("; 90 training and 10 validation images a window"), lines[0]
    assert lines[1].startswith("reference (batch 128): trains ") and "an epoch" in lines[1]
    assert lines[2].startswith("ours: trains ") and "an epoch" in lines[2], lines[2]
    assert lines[3].startswith("training speed against the reference's step alone: ")
    ratio = re.search(r"-> ([\d.]+)x sooner", lines[4])
    assert ratio and re.fullmatch(r"ratio: [\d.]+", lines[5]), res.stdout
    assert abs(float(lines[5].split()[1]) - float(ratio.group(1))) < 0.01


def test_reference_speed_without_a_reference_checkout_is_one_line(tmp_path):
    res = run_benchmark("reference_speed.py", "--ref_dir", tmp_path, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: --ref_dir {tmp_path} has no trainer.py; clone "
        "https://github.com/MiuGod0126/RAM-Paddle and point --ref_dir at it"]


def test_reference_speed_names_a_failing_reference_in_one_line(tiny_data, tmp_path):
    """A worker that dies mid-way ends the run with its own last error line."""
    (tmp_path / "config.py").write_text(FAKE_REFERENCE["config.py"])
    (tmp_path / "trainer.py").write_text(FAKE_REFERENCE["trainer.py"].replace(
        "return sum(int(x.shape[0]) for x, _ in self.train_loader)",
        "raise RuntimeError('out of patience')"))
    res = run_benchmark("reference_speed.py", "--ref_dir", tmp_path, "--images", "90",
                        "--rounds", "1", "--data_dir", tiny_data)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: the worker in {tmp_path} stopped: RuntimeError: out of patience"], res.stderr


def test_grad_norms_reports_the_three_norms_and_the_clip(tiny_run, tiny_data):
    ckpt = tiny_run.ckpt_dir / "ram_2_8x8_1_model_best.pdparams"
    for fresh in ([], ["--fresh"]):
        res = run_benchmark("grad_norms.py", "--ckpt", ckpt, "--batches", "2", "--data_dir",
                            tiny_data, *fresh)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.strip().splitlines()
        assert "2 steps" in lines[0] and ("initial weights" in lines[0]) == bool(fresh)
        parts = [re.match(r"\s+(location network|the rest|all) .*median +([\d.]+) .*max "
                          r"+([\d.]+) +above the clip: (\d+)% of steps", l) for l in lines[1:]]
        assert [m.group(1) for m in parts] == ["location network", "the rest", "all"], lines
        loc, rest, whole = (float(m.group(3)) for m in parts)
        assert 0 < loc <= whole and 0 < rest <= whole          # all = sqrt(loc^2 + rest^2)
        assert all(m.group(4) == "0" for m in parts)           # no --clip_grad: nothing clips
