"""align.py: PyTorch <-> Paddle checkpoint conversion and the cross-framework --check.

PyTorch is a development dependency (requirements-dev.txt): without it this module is skipped
locally, but in CI (env CI set) a missing torch is a failure. The real MNIST files and the
reference checkpoint are likewise optional locally and required in CI.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
ALIGN, MAIN = ROOT / "align.py", ROOT / "main.py"
MNIST_DIR = ROOT / "data" / "MNIST"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / \
    "ram_6_8x8_1_model_best.pdparams"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

if IN_CI:
    import torch  # CI installs requirements-dev.txt: a missing torch must fail, not skip
else:
    torch = pytest.importorskip("torch", reason="pip install -r requirements-dev.txt")

import align  # noqa: E402
from conftest import require, write_idx  # noqa: E402
from utils import ARCH_KEYS  # noqa: E402

# A small multi-scale architecture: fast, and rnn.i2h is square (glimpse 16 + loc 8 = 24).
SMALL = dict(patch_size=4, glimpse_scale=2, num_patches=2, loc_hidden=8, glimpse_hidden=16,
             num_glimpses=3, hidden_size=24, std=0.1)
N_TEST_IMAGES = 200


def run(script, *args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=str(cwd),
                          env=env, capture_output=True, text=True, timeout=300)


def torch_shapes(arch):
    """The reference's nn.Linear shapes, [out, in], written out from the architecture."""
    g, k = arch["patch_size"], arch["num_patches"]
    h_g, h_l, hid = arch["glimpse_hidden"], arch["loc_hidden"], arch["hidden_size"]
    linears = {"sensor.fc1": (h_g, k * g * g), "sensor.fc2": (h_l, 2),
               "sensor.fc3": (h_g + h_l, h_g), "sensor.fc4": (h_g + h_l, h_l),
               "rnn.i2h": (hid, h_g + h_l), "rnn.h2h": (hid, hid),
               "locator.fc": (hid // 2, hid), "locator.fc_lt": (2, hid // 2),
               "classifier.fc": (10, hid), "baseliner.fc": (1, hid)}
    shapes = {}
    for name, (out, inp) in linears.items():
        shapes[name + ".weight"] = (out, inp)
        shapes[name + ".bias"] = (out,)
    return shapes


def random_torch_state(arch, seed=0):
    """torch.randn weights of the right [out, in] shapes, scaled by 1/sqrt(in) like an init."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=gen) / (s[1] ** 0.5 if len(s) == 2 else 10.0)
            for k, s in torch_shapes(arch).items()}


def save_reference_style(path, state, epoch=7, best_valid_acc=91.25):
    """The kevinzakka/recurrent-visual-attention layout, with a torch-Adam-like optim_state."""
    optim = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
             "param_groups": [{"lr": 3e-4, "params": [0]}]}
    torch.save({"epoch": epoch, "model_state": state, "optim_state": optim,
                "best_valid_acc": best_valid_acc}, str(path))
    return path


def write_params_json(path, arch):
    """A reference-style <name>_params.json: every flag, the architecture among them."""
    import json
    flags = dict(arch, batch_size=128, is_train=True, data_dir="./data/", init_lr=3e-4, M=1)
    path.write_text(json.dumps(flags, indent=2, sort_keys=True))
    return path


def network_config(config):
    """The network's keys of a written config, which must hold every ARCH_KEY."""
    assert set(config) == set(ARCH_KEYS), config
    return {k: config[k] for k in SMALL}


def check_lines(stdout):
    """{output: max diff} from the check's table."""
    diffs = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in align.OUTPUTS:
            diffs[parts[0]] = float(parts[1])
    return diffs


def assert_check_passed(res):
    assert res.returncode == 0, res.stdout + res.stderr
    diffs = check_lines(res.stdout)
    assert set(diffs) == set(align.OUTPUTS), res.stdout
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    assert "[*] check passed" in res.stdout
    return diffs


@pytest.fixture(scope="module")
def random_torch(tmp_path_factory):
    """A PyTorch checkpoint with random weights and no stored config, plus its params json."""
    d = tmp_path_factory.mktemp("random_torch")
    ckpt = save_reference_style(d / "ram_3_4x4_2_model_best.pth.tar", random_torch_state(SMALL))
    return ckpt, write_params_json(d / "ram_3_4x4_2_params.json", SMALL)


@pytest.fixture(scope="module")
def converted(random_torch, tmp_path_factory):
    """The CLI run: random PyTorch checkpoint -> our format, with --check."""
    ckpt, params = random_torch
    d = tmp_path_factory.mktemp("converted")
    out = d / "ram_3_4x4_2.pdparams"
    res = run(ALIGN, "--torch_ckpt", ckpt, "--params_json", params, "--out", out, "--check",
              cwd=d)
    return out, res


@pytest.fixture(scope="module")
def tiny_test_data(tmp_path_factory):
    """A data dir with the first 200 MNIST test images, written back as raw idx files."""
    from data_loader import read_idx
    d = tmp_path_factory.mktemp("tiny_mnist")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        arr = read_idx(str(require(MNIST_DIR / (name + ".gz"), "MNIST test file " + name)))
        write_idx(d / name, arr[:N_TEST_IMAGES])
    return d


def evaluate(ckpt, data_dir, cwd):
    res = run(MAIN, "--is_train=False", "--ckpt", ckpt, "--data_dir", data_dir,
              "--logs_dir", cwd / "logs", "--plot_dir", cwd / "plots", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    acc = [line for line in res.stdout.splitlines() if "[*] Test Acc" in line]
    assert len(acc) == 1, res.stdout
    assert f"/{N_TEST_IMAGES} (" in acc[0], acc[0]
    return acc[0]


# ---------------------------------------------------------------- tests
def test_without_torch_one_line_and_non_zero(tmp_path):
    code = ("import runpy, sys; sys.modules['torch'] = None; "  # makes `import torch` fail
            f"sys.argv = ['align.py', '--torch_ckpt', 'a.pth.tar', '--out', 'b.pdparams']; "
            f"sys.path.insert(0, {str(ROOT)!r}); "
            f"runpy.run_path({str(ALIGN)!r}, run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=120)
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert res.returncode != 0
    assert len(lines) == 1, lines
    assert "torch" in lines[0].lower() and "pip install -r requirements-dev.txt" in lines[0]


def test_round_trip_paddle_torch_paddle_is_bit_identical(tmp_path, capsys):
    import paddle
    from checkpoint import save as atomic_save
    paddle.seed(5)
    model = align.paddle_model(SMALL)
    src = tmp_path / "src.pdparams"
    atomic_save({"epoch": 12, "model_state": model.state_dict(), "optim_state": {},
                 "best_valid_acc": 97.5, "counter": 3, "elapsed": 81.0, "config": dict(SMALL)},
                src)
    pth, back = tmp_path / "mid.pth.tar", tmp_path / "back.pdparams"
    assert align.main(["--to_torch", "--paddle_ckpt", str(src), "--out", str(pth)]) == 0
    assert align.main(["--torch_ckpt", str(pth), "--out", str(back)]) == 0
    capsys.readouterr()

    original = {k: v.numpy() for k, v in model.state_dict().items()}
    mid = torch.load(str(pth), map_location="cpu", weights_only=True)
    assert mid["epoch"] == 12 and mid["best_valid_acc"] == 97.5
    assert mid["optim_state"] == {} and network_config(mid["config"]) == SMALL
    assert list(mid["model_state"]) == list(original)
    for k, v in mid["model_state"].items():
        assert torch.is_tensor(v) and tuple(v.shape) == torch_shapes(SMALL)[k], k
        expected = original[k].T if v.ndim == 2 else original[k]
        assert np.array_equal(v.numpy(), expected), k

    final = paddle.load(str(back))
    assert set(final["model_state"]) == set(original)
    for k, v in final["model_state"].items():
        assert v.numpy().dtype == original[k].dtype, k
        assert np.array_equal(v.numpy(), original[k]), k
    assert final["epoch"] == 12 and final["best_valid_acc"] == 97.5
    assert final["counter"] == 0 and final["elapsed"] == 0.0 and final["optim_state"] == {}
    assert network_config(final["config"]) == SMALL


@pytest.mark.slow
def test_random_torch_checkpoint_converts_and_check_passes(converted):
    out, res = converted
    diffs = assert_check_passed(res)
    print("random PyTorch checkpoint, --check max diffs:", diffs)
    assert "Traceback" not in res.stderr
    state = align.read_paddle(str(out))[1]
    assert state["epoch"] == 7 and state["best_valid_acc"] == 91.25
    assert state["optim_state"] == {} and state["counter"] == 0 and state["elapsed"] == 0.0
    assert network_config(state["config"]) == SMALL  # from --params_json: the file has none


@pytest.mark.slow
def test_converted_checkpoint_evaluates_with_main(converted, tiny_test_data, tmp_path):
    out, res = converted
    assert res.returncode == 0, res.stdout + res.stderr
    evaluate(out, tiny_test_data, tmp_path)


@pytest.mark.slow
def test_transposed_square_weight_fails_check(random_torch, converted, tmp_path, capsys,
                                              monkeypatch):
    ckpt, params = random_torch
    good_paddle, res = converted
    assert res.returncode == 0, res.stdout + res.stderr

    # A PyTorch file whose square rnn.i2h is transposed: shapes still fit, values do not.
    obj = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    w = obj["model_state"]["rnn.i2h.weight"]
    assert w.shape[0] == w.shape[1]
    obj["model_state"]["rnn.i2h.weight"] = w.t().contiguous()
    bad = tmp_path / "bad.pth.tar"
    torch.save(obj, str(bad))
    capsys.readouterr()
    assert align.main(["--check", "--torch_ckpt", str(bad), "--paddle_ckpt",
                       str(good_paddle)]) == 1
    text = capsys.readouterr().out
    assert "check FAILED" in text and check_lines(text)["h_t"] > 1e-3, text

    # A converter that forgets to transpose the square weight: --check catches it too.
    real = align.to_paddle_layout

    def buggy(arrays, arch):
        out = real(arrays, arch)
        out["rnn.i2h.weight"] = arrays["rnn.i2h.weight"].copy()
        return out

    monkeypatch.setattr(align, "to_paddle_layout", buggy)
    assert align.main(["--torch_ckpt", str(ckpt), "--params_json", str(params),
                       "--out", str(tmp_path / "buggy.pdparams"), "--check"]) == 1
    assert "check FAILED" in capsys.readouterr().out


def test_wrong_keys_and_shapes_are_named_without_traceback(random_torch, tmp_path):
    ckpt, params = random_torch
    obj = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    sd = obj["model_state"]
    sd["rnn.hh.weight"] = sd.pop("rnn.h2h.weight")           # renamed
    del sd["locator.fc_lt.bias"]                              # missing
    sd["classifier.fc.bias"] = torch.zeros(11)                # wrong shape
    bad = tmp_path / "bad.pth.tar"
    torch.save(obj, str(bad))
    out = tmp_path / "never.pdparams"
    res = run(ALIGN, "--torch_ckpt", bad, "--params_json", params, "--out", out, cwd=tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.splitlines()
    for key in ("rnn.h2h.weight", "rnn.hh.weight", "locator.fc_lt.bias", "classifier.fc.bias"):
        assert sum(bool(re.search(re.escape(key) + "[ :]", line)) for line in lines) == 1, \
            (key, res.stderr)
    assert any("missing key rnn.h2h.weight" in line for line in lines)
    assert any("unexpected key rnn.hh.weight" in line for line in lines)
    assert any("classifier.fc.bias: [11]" in line and "[10]" in line for line in lines)
    assert not out.exists()


@pytest.mark.slow
def test_reference_checkpoint_to_torch_check_passes(tmp_path, capsys):
    ref = require(REFERENCE, "reference checkpoint")
    pth = tmp_path / "ram_6_8x8_1_model_best.pth.tar"
    res = run(ALIGN, "--to_torch", "--paddle_ckpt", ref, "--out", pth, "--check", cwd=tmp_path)
    diffs = assert_check_passed(res)
    with capsys.disabled():
        print(f"\n[reference --to_torch --check] max |paddle - torch|: {diffs}")
    obj = torch.load(str(pth), map_location="cpu", weights_only=True)
    assert obj["epoch"] == 290 and obj["config"]["hidden_size"] == 256
    assert {k: tuple(v.shape) for k, v in obj["model_state"].items()} == \
        torch_shapes(obj["config"])


@pytest.mark.slow
def test_reference_round_trip_keeps_its_accuracy(tmp_path, tiny_test_data, capsys):
    ref = require(REFERENCE, "reference checkpoint")
    pth, back = tmp_path / "ref.pth.tar", tmp_path / "ref.pdparams"
    assert align.main(["--to_torch", "--paddle_ckpt", str(ref), "--out", str(pth)]) == 0
    assert align.main(["--torch_ckpt", str(pth), "--out", str(back)]) == 0
    capsys.readouterr()
    line = evaluate(back, tiny_test_data, tmp_path)
    correct = int(line.split("Test Acc:")[1].split("/")[0])
    assert correct >= 0.95 * N_TEST_IMAGES, line  # the reference scores ~99% on MNIST


SHIPPED = sorted((ROOT / "ckpt" / "pretrained").glob("*_model_best.pdparams"))


@pytest.mark.slow
@pytest.mark.parametrize("ckpt", SHIPPED, ids=[p.name.split("_model")[0] for p in SHIPPED])
def test_every_shipped_model_converts_both_ways_and_checks(ckpt, tmp_path):
    """RNN and LSTM cores, random and learned first fixations: --to_torch --check, then back
    with --check, gives the same weights; an LSTM core is a torch.nn.LSTMCell's state."""
    pth, back = tmp_path / "m.pth.tar", tmp_path / "back.pdparams"
    assert_check_passed(run(ALIGN, "--to_torch", "--paddle_ckpt", ckpt, "--out", pth,
                            "--check", "--batch_size", 3, cwd=tmp_path))
    state = torch.load(str(pth), map_location="cpu", weights_only=True)
    if state["config"]["core"] == "lstm":
        cell = torch.nn.LSTMCell(256, 256)
        cell.load_state_dict({k.split(".")[-1]: v for k, v in state["model_state"].items()
                              if k.startswith("rnn.lstm.")})
    assert_check_passed(run(ALIGN, "--torch_ckpt", pth, "--out", back, "--check",
                            "--batch_size", 3, cwd=tmp_path))
    import paddle
    original, final = paddle.load(str(ckpt))["model_state"], paddle.load(str(back))["model_state"]
    assert set(original) == set(final)
    for k in original:
        assert np.array_equal(np.asarray(original[k]), np.asarray(final[k])), k


def test_an_unknown_core_is_one_error_line(tmp_path):
    import paddle
    paddle.seed(0)
    src = tmp_path / "gru.pdparams"
    paddle.save({"epoch": 1, "model_state": align.paddle_model(SMALL).state_dict(),
                 "config": dict(SMALL, core="gru")}, str(src))
    res = run(ALIGN, "--to_torch", "--paddle_ckpt", src, "--out", tmp_path / "x.pth", cwd=tmp_path)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "gru" in lines[0]
