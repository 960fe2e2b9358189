"""The benchmark scripts run end to end on tiny budgets (their numbers are not checked)."""
import re
import subprocess
import sys
from pathlib import Path

from _util import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_train_speed_prints_rates_floor_plain_ratio_and_parts(tiny_data):
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--batch_sizes", "16",
         "--windows", "2", "--steps", "2", "--plain", "--parts", "--data_dir", str(tiny_data)],
        env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(r"samples/s: \d+", lines[-1]), lines[-1]
    assert any(re.match(r"batch 16: [\d,]+ samples/s .* floor [\d,]+ samples/s", l) for l in lines)
    assert any(re.match(r"batch 16, plain autograd episode: [\d,]+ samples/s .* [\d.]+x faster", l)
               for l in lines), res.stdout
    assert any(re.fullmatch(r"batch 16, ms per step: forward [\d.]+ \(GEMM floor [\d.]+\), "
                            r"backward [\d.]+ \(GEMM floor [\d.]+\), optimiser [\d.]+ "
                            r"\(no GEMMs\)", l) for l in lines), res.stdout
