"""The search report: where each digit lies (data_loader's digit_centres), which fixations find
it (model.SearchMeter), the report at test time and per epoch, and plot_glimpses --search."""
import re

import numpy as np
import paddle
import pytest

from conftest import run_main
from data_loader import TensorLoader, make_loader
from model import FOUND_RADIUS, RecurrentAttention, SearchMeter
import plot_glimpses

D = 28


def test_digit_centres_are_the_middle_of_the_pasted_digit():
    # Digits that are 255 everywhere: on a translated canvas their footprint is exactly
    # their 28x28 box, so its middle is known from the pixels alone.
    images = np.full((50, D, D), 255, dtype=np.uint8)
    loader = make_loader(images, np.zeros(50, dtype=np.int64), 16, "translated", canvas=70,
                         fixed_seed=3)
    for idx, x, _ in loader.iterate(with_index=True):
        centres = loader.digit_centres(idx).numpy()
        for img, (col, row) in zip(x.numpy()[:, 0], centres):
            rows, cols = np.nonzero(img)
            assert (rows.min() + rows.max() + 1) / 2 == row
            assert (cols.min() + cols.max() + 1) / 2 == col


def test_digit_centres_of_training_canvases_follow_the_epoch():
    images = np.full((40, D, D), 255, dtype=np.uint8)
    loader = make_loader(images, np.zeros(40, dtype=np.int64), 40, "cluttered", canvas=60,
                         clutter=0, shuffle=True, seed=1)
    seen = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        idx, x, _ = next(loader.iterate(with_index=True))
        col, row = loader.digit_centres(idx).numpy()[0]
        rows, cols = np.nonzero(x.numpy()[0, 0])
        assert (rows.min() + 14, cols.min() + 14) == (row, col)
        seen.append((row, col))
    assert len(set(seen)) == 2


def test_plain_mnist_digits_sit_in_the_middle():
    loader = TensorLoader(np.zeros((5, D, D), dtype=np.uint8), np.zeros(5, dtype=np.int64), 5)
    np.testing.assert_array_equal(loader.digit_centres(paddle.arange(5)).numpy(),
                                  np.full((5, 2), 14.0))


def test_search_meter_splits_the_error_into_search_and_recognition():
    centres = paddle.to_tensor([[30.0, 30.0]] * 4)
    far = [80.0, 80.0]
    # image 0 found at glimpse 2 (exactly on the radius), 1 found at glimpse 1, 2 and 3 never
    fixations = paddle.to_tensor([
        [far, [35.0, 25.0], far, far],
        [[30.0 + FOUND_RADIUS, 30.0 - FOUND_RADIUS], far, [30.0 + FOUND_RADIUS + 1, 30.0], far],
    ])                                                                   # [T=2, B=4, 2]
    correct = paddle.to_tensor([True, False, True, False])
    meter = SearchMeter(2)
    meter.add(fixations, centres, correct)
    s = SearchMeter.summary(meter.totals())
    assert s["found"] == 50.0
    assert s["err_found"] == 50.0 and s["err_lost"] == 50.0
    assert s["lost_errors"] == 50.0
    d_far = np.hypot(50, 50)
    np.testing.assert_allclose(s["dist"], [(np.hypot(5, 5) + 3 * d_far) / 4,
                                           (np.hypot(10, 10) + d_far + 11 + d_far) / 4], rtol=1e-5)


def test_search_meter_counts_any_of_m_trajectories():
    centres = paddle.to_tensor([[30.0, 30.0], [50.0, 50.0]])
    # M = 2 copies of B = 2 images, rows m * B + b: copy 1 of image 1 finds it
    fixations = paddle.to_tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [50.0, 50.0]]])
    meter = SearchMeter(1)
    meter.add(fixations, centres, paddle.to_tensor([True, True]))
    assert SearchMeter.summary(meter.totals())["found"] == 50.0


def test_fixation_pixels_are_the_retinas_centres():
    model = RecurrentAttention(4, 1, 1, 1, 8, 8, 0.1, 16, 10)
    x = paddle.zeros([3, 1, 40, 40])
    locs = paddle.to_tensor([[[-1.0, -1.0], [0.0, 0.0], [1.0, 0.5]]])
    np.testing.assert_array_equal(model.fixation_pixels(x, locs).numpy(),
                                  [[[0, 0], [20, 20], [40, 30]]])


SEARCH_LINE = re.compile(r"\[\*\] Search: found ([\d.]+)% .* dist/glimpse ((?:[\d.]+ )+)px")


@pytest.fixture(scope="module")
def translated_ckpt(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("translated")
    res = run_main(["--dataset", "translated", "--canvas", "40", "--epochs", "1",
                    "--num_glimpses", "2", "--batch_size", "64", "--data_dir", tiny_data,
                    "--ckpt_dir", work / "ckpt", "--logs_dir", work / "logs",
                    "--plot_dir", work / "plots", "--plot_freq", "0"], cwd=work, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return work, work / "ckpt" / "ram_2_8x8_1_translated40_model_best.pdparams", res


@pytest.mark.slow
def test_validation_line_reports_the_search(translated_ckpt):
    _, _, res = translated_ckpt
    assert re.search(r"^epoch 1/1 \|.*\| found [\d.]+ err found [\d.]+ lost ([\d.]+|-)$",
                     res.stdout, re.M), res.stdout


@pytest.mark.slow
def test_test_run_reports_the_search_and_the_plot_maps_it(translated_ckpt, tiny_data):
    work, ckpt, _ = translated_ckpt
    res = run_main(["--is_train=False", "--ckpt", ckpt, "--data_dir", tiny_data,
                    "--logs_dir", work / "logs"], cwd=work, timeout=120)
    assert res.returncode == 0, res.stderr
    m = SEARCH_LINE.search(res.stdout)
    assert m, res.stdout
    assert len(m.group(2).split()) == 2  # one distance per glimpse
    out = work / "search.png"
    assert plot_glimpses.main(["--search", str(ckpt), "--data_dir", str(tiny_data),
                               "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    folder = work / "plots_here"          # an existing folder takes search.png, as --ckpt's
    folder.mkdir()
    assert plot_glimpses.main(["--search", str(ckpt), "--data_dir", str(tiny_data),
                               "--out", str(folder)]) == 0
    assert (folder / "search.png").stat().st_size > 5000


@pytest.mark.slow
def test_search_plot_refuses_a_28x28_model(tiny_run, capsys):
    ckpt = tiny_run.ckpt_dir / "ram_2_8x8_1_model_best.pdparams"
    assert plot_glimpses.main(["--search", str(ckpt)]) == 2
    assert "translated or cluttered" in capsys.readouterr().err
