"""The math-library environment main.py sets before Paddle loads (utils.tune_cpu_env)."""
import pytest

import utils
from utils import mkl_cpu_type

SKX = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("vendor, flags, want", [
    ("AuthenticAMD", SKX | {"avx512_vnni", "avx512_bf16"}, "9"),  # Zen 4 / Zen 5
    ("AuthenticAMD", SKX, "7"),
    ("AuthenticAMD", SKX - {"avx512bw"}, "5"),  # an AVX-512 path it cannot run
    ("AuthenticAMD", {"avx2", "fma"}, "5"),     # Zen 1-3
    ("AuthenticAMD", {"avx"}, None),
    ("GenuineIntel", SKX | {"avx512_vnni"}, None),  # MKL picks Intel's paths itself
    ("", set(), None),                             # no /proc/cpuinfo
])
def test_mkl_cpu_type_never_asks_for_instructions_the_cpu_lacks(vendor, flags, want):
    assert mkl_cpu_type(vendor, flags) == want


def test_this_machines_cpu_info_is_read():
    """cpu_info() returns the first processor's vendor_id and flags as /proc/cpuinfo has them."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    vendor, flags = utils.cpu_info()
    assert vendor == fields.get("vendor_id", "")
    assert flags == set(fields.get("flags", "").split())


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "PADDLE_LOCAL_SIZE"):
        monkeypatch.setenv(key, "")  # recorded, so what tune_cpu_env sets is undone after
        monkeypatch.delenv(key)
    monkeypatch.setattr(utils, "cpu_info", lambda: ("AuthenticAMD", SKX | {"avx512_vnni"}))
    monkeypatch.setattr(utils.os, "cpu_count", lambda: 2)
    return monkeypatch


def test_tune_cpu_env_defaults(clean_env):
    assert utils.tune_cpu_env() == 2
    assert utils.os.environ["MKL_DEBUG_CPU_TYPE"] == "9"
    assert utils.os.environ["OMP_NUM_THREADS"] == "1"


def test_tune_cpu_env_exported_values_win_and_launch_shares_the_cores(clean_env):
    clean_env.setenv("MKL_DEBUG_CPU_TYPE", "5")
    clean_env.setenv("PADDLE_LOCAL_SIZE", "2")
    assert utils.tune_cpu_env() == 1
    assert utils.os.environ["MKL_DEBUG_CPU_TYPE"] == "5"
