"""A trained RAM outside training: the exported Paddle Inference model, its ONNX conversion,
and classifying one's own image files."""
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, cli_env, run_main
from conftest import in_ci

pytestmark = pytest.mark.slow  # exports and whole test sets

SHIPPED = ROOT / "ckpt" / "pretrained" / "ram_6_8x8_1_model_best.pdparams"
TRANSLATED = ROOT / "ckpt" / "pretrained" / "ram_6_12x12_3_translated60_model_best.pdparams"


def export(ckpt, out, tmp_path):
    res = run_main(["--is_train=False", "--export", out, "--ckpt", ckpt], cwd=tmp_path,
                   timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    res = export(SHIPPED, work / "model", work)
    return work / "model", res


@pytest.fixture(scope="module")
def exported_reference(reference_ckpt, tmp_path_factory):
    """The reference's checkpoint: an RNN core and a random first fixation, so the exported
    model takes l_0 beside the image."""
    work = tmp_path_factory.mktemp("export_reference")
    export(reference_ckpt, work / "model", work)
    return work / "model"


def dygraph(ckpt, x, l_0):
    """model.predict of the checkpoint: probabilities and fixations."""
    from checkpoint import load_model
    model, _ = load_model(str(ckpt))
    with paddle.no_grad():
        probs, locs = model.predict(paddle.to_tensor(x),
                                    None if l_0 is None else paddle.to_tensor(l_0))
    return probs.numpy(), locs.numpy()


def test_export_writes_the_model_and_says_what(exported):
    folder, res = exported
    for name in ("inference.json", "inference.pdiparams", "ram_config.json"):
        assert (folder / name).is_file()
        assert f"[*] wrote {folder / name} (" in res.stdout
    assert "KiB)" in res.stdout


def _predictor_and_dygraph_agree(folder, ckpt, mnist_dir, with_l_0):
    """Over the whole test set, 500 images at a time: the same predictions and fixations on
    the first 256, the same accuracy over all (policy at its mean; a random first fixation
    model starts at the centre), which must pass 98%."""
    import data_loader
    from export import predictor as load_predictor, run as run_predictor
    predictor, described = load_predictor(str(folder))
    assert described["inputs"] == (["x", "l_0"] if with_l_0 else ["x"])
    assert described["image_size"] == 28
    loader = data_loader.get_test_loader(str(mnist_dir), 500, "mnist")
    right = {"dygraph": 0, "inference": 0}
    for i, (x, y) in enumerate(loader):
        x, y = x.numpy(), y.numpy()
        l_0 = np.zeros((len(x), 2), np.float32) if with_l_0 else None
        lp_d, locs_d = dygraph(ckpt, x, l_0)
        lp_i, locs_i = run_predictor(predictor, x, l_0)
        if i == 0:
            np.testing.assert_array_equal(lp_i[:256].argmax(1), lp_d[:256].argmax(1))
            np.testing.assert_allclose(locs_i[:, :256], locs_d[:, :256], rtol=0, atol=1e-5)
            np.testing.assert_allclose(lp_i[:256], lp_d[:256], rtol=0, atol=1e-5)
        right["dygraph"] += int((lp_d.argmax(1) == y).sum())
        right["inference"] += int((lp_i.argmax(1) == y).sum())
    assert right["dygraph"] == right["inference"] > 9800, right


def test_predictor_equals_the_dygraph_model(exported, mnist_dir):
    """The shipped 28x28 model (LSTM core, learned first fixation): the image alone."""
    _predictor_and_dygraph_agree(exported[0], SHIPPED, mnist_dir, with_l_0=False)


def test_a_random_first_fixation_model_exports_with_l_0_as_input(exported_reference,
                                                                  reference_ckpt, mnist_dir):
    """The reference's RNN model: its first fixation is an input of the exported model."""
    _predictor_and_dygraph_agree(exported_reference, reference_ckpt, mnist_dir, with_l_0=True)


def test_a_multi_scale_lstm_model_with_a_learned_first_fixation_exports_too(tmp_path, mnist_dir):
    """The shipped translated model: 3 scales, an LSTM core, and a first fixation of its own,
    so the exported model takes the image alone."""
    import data_loader
    from export import predictor as load_predictor, run as run_predictor
    export(TRANSLATED, tmp_path / "model", tmp_path)
    predictor, described = load_predictor(str(tmp_path / "model"))
    assert described["inputs"] == ["x"]
    arch = described["config"]
    assert (arch["core"], arch["first_fixation"]) == ("lstm", "learned")
    x, _ = next(iter(data_loader.get_test_loader(str(mnist_dir), 64, "translated", 60)))
    x = x.numpy()
    lp_d, locs_d = dygraph(TRANSLATED, x, None)
    lp_i, locs_i = run_predictor(predictor, x)
    np.testing.assert_array_equal(lp_i.argmax(1), lp_d.argmax(1))
    np.testing.assert_allclose(locs_i, locs_d, rtol=0, atol=1e-5)


def test_onnx_conversion_runs_to_the_same_outputs(exported, mnist_dir, tmp_path):
    if shutil.which("paddle2onnx") is None or not _has("onnxruntime"):
        if in_ci():
            pytest.fail("paddle2onnx and onnxruntime are in requirements-dev.txt", pytrace=False)
        pytest.skip("paddle2onnx or onnxruntime not installed")
    import onnxruntime as ort

    import data_loader
    folder = exported[0]
    onnx_file = tmp_path / "ram.onnx"
    res = subprocess.run(["paddle2onnx", "--model_dir", str(folder), "--model_filename",
                          "inference.json", "--params_filename", "inference.pdiparams",
                          "--save_file", str(onnx_file)], capture_output=True, text=True,
                         env=cli_env(), timeout=240)
    assert res.returncode == 0 and onnx_file.is_file(), res.stdout[-2000:] + res.stderr[-2000:]
    x, _ = next(iter(data_loader.get_test_loader(str(mnist_dir), 256, "mnist")))
    x = x.numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    lp_o, locs_o = session.run(None, {"x": x})
    lp_d, locs_d = dygraph(SHIPPED, x, None)
    np.testing.assert_array_equal(lp_o.argmax(1), lp_d.argmax(1))
    np.testing.assert_allclose(locs_o, locs_d, rtol=0, atol=1e-5)


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------ your own images
@pytest.fixture(scope="module")
def image_files(mnist_dir, tmp_path_factory):
    """A dark-on-light 90x90 grey 7, a 56x56 colour 2, and four files that cannot be used."""
    from PIL import Image

    from data_loader import read_idx
    folder = tmp_path_factory.mktemp("images")
    digits = read_idx(str(mnist_dir / "t10k-images-idx3-ubyte.gz"))[:3]
    Image.fromarray(255 - digits[0]).resize((90, 90)).save(folder / "seven.png")
    Image.fromarray(np.stack([digits[1]] * 3, -1)).resize((56, 56)).save(folder / "two.jpg")
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "dot.png")
    Image.fromarray(digits[2].astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "text.png").write_text("not an image")
    return folder


@pytest.mark.parametrize("source", ["ckpt", "inference_dir"])
def test_classifying_image_files(image_files, exported, tmp_path, source):
    f = image_files
    model = ["--ckpt", str(SHIPPED)] if source == "ckpt" else ["--inference_dir", str(exported[0])]
    files = [f / "seven.png", f / "missing.png", f / "empty.png", f / "dot.png", f / "deep.png",
             f / "text.png", f / "two.jpg"]
    res = subprocess.run([sys.executable, str(ROOT / "plot_glimpses.py"), *model, "--image",
                          *map(str, files), "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, env=cli_env(), cwd=tmp_path, timeout=240)
    assert res.returncode == 2, res.stdout + res.stderr          # some files could not be used
    assert "Traceback" not in res.stderr
    assert f"{f / 'seven.png'}: 7 (p=" in res.stdout and "inverted (dark on light)" in res.stdout
    assert f"{f / 'two.jpg'}: 2 (p=" in res.stdout and "56x56 RGB -> 28x28 grey" in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    for name, needle in (("missing.png", "no such file"), ("empty.png", "the file is empty"),
                         ("dot.png", "1x1 pixels is too small"), ("deep.png", "16-bit image"),
                         ("text.png", "not a readable image")):
        assert sum(str(f / name) in e and needle in e for e in errors) == 1, (name, errors)
    assert len(errors) == 5
    for stem in ("seven", "two"):
        assert (tmp_path / "out" / f"{stem}_glimpses.gif").is_file()
        assert (tmp_path / "out" / f"{stem}_path.png").is_file()
