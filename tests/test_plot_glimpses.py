"""plot_glimpses.py: exact retina boxes, animation/PNG outputs of both modes, learning curves,
and one-line errors. Runs from any working directory and needs no real training or data."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plot_glimpses as pg  # noqa: E402
from conftest import assert_one_error_line, naive_patches, write_idx  # noqa: E402

SCRIPT = str(ROOT / "plot_glimpses.py")
# Small architecture with 3 scales, so nested boxes and pooled patches are exercised.
ARCH = dict(patch_size=4, num_patches=3, glimpse_scale=2, glimpse_hidden=16, loc_hidden=8,
            hidden_size=32, std=0.1, num_glimpses=3)


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=120)


def frames_of(path):
    from PIL import Image, ImageSequence
    with Image.open(path) as im:
        return im.size, sum(1 for _ in ImageSequence.Iterator(im))


def decodes(path):
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        return im.size


def retina_patches(retina, x, l):
    """The k full-resolution patches the Retina reads, as numpy [B, C, size, size] each."""
    return naive_patches(x.numpy(), l.numpy(), retina.g, retina.k, retina.s)


# ---------------------------------------------------------------------------- geometry
def edge_locations():
    rng = np.random.RandomState(0)
    locs = rng.uniform(-1, 1, size=(200, 2)).astype(np.float32)
    special = np.array([-1, 1, 0, -0.5, 0.5, 1 / 28, -1 / 28, 0.999999, -0.999999,
                        np.nextafter(np.float32(0.5), np.float32(1))], dtype=np.float32)
    grid = np.stack(np.meshgrid(special, special), -1).reshape(-1, 2)
    # Every pixel boundary, and one float32 step either side of it.
    b = (np.arange(29, dtype=np.float32) * 2 / 28 - 1).astype(np.float32)
    near = np.concatenate([b, np.nextafter(b, np.float32(2)), np.nextafter(b, np.float32(-2))])
    near = np.clip(near, -1, 1)
    return np.concatenate([locs, grid, np.stack([near, near[::-1]], 1)]).astype(np.float32)


def test_pixel_centre_matches_retina_bit_for_bit():
    import paddle
    from modules import Retina
    locs = edge_locations()
    for size in (28, 60, 100):
        want = Retina.denormalize(size, paddle.to_tensor(locs)).numpy()
        assert np.array_equal(pg.pixel_centre(locs, size), want)


def test_boxes_cover_exactly_the_retina_patches():
    import paddle
    from modules import Retina
    H, W, g, k, s = 28, 28, 4, 3, 2
    image = np.arange(H * W, dtype=np.float32).reshape(H, W) + 1.0   # every pixel distinct
    locs = edge_locations()
    retina = Retina(g, k, s)
    x = paddle.to_tensor(np.broadcast_to(image, (len(locs), 1, H, W)).copy())
    lt = paddle.to_tensor(locs)
    centres = Retina.denormalize(W, lt).numpy(), Retina.denormalize(H, lt).numpy()
    all_patches = retina_patches(retina, x, lt)
    for i in range(k):
        size = g * s ** i
        patches = all_patches[i][:, 0]
        for b, loc in enumerate(locs):
            x0, y0, bsize = pg.glimpse_boxes(loc, H, W, g, k, s)[i]
            assert bsize == size
            # The box's centre pixel is the denormalised location (cols from x, rows from y).
            assert x0 + size // 2 == Retina.denormalize(W, lt[b:b + 1, 0]).item() == \
                centres[0][b, 0]
            assert y0 + size // 2 == centres[1][b, 1]
            # ... and the pixels inside the box are exactly what the Retina extracted.
            assert np.array_equal(pg.crop_box(image, (x0, y0, size)), patches[b]), (loc, i)


def test_drawn_rectangles_are_the_pixel_boxes():
    fig = pg._figure(2, 2)
    ax = fig.subplots()
    image = np.zeros((28, 28), np.float32)
    pg._show(ax, image)
    loc = np.array([0.3, -0.55], np.float32)
    rects = pg.draw_boxes(ax, loc, 28, 28, 8, 2, 2)
    # cx = floor(0.5 * 1.3 * 28) = 18, cy = floor(0.5 * 0.45 * 28) = 6
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == [
        (18 - 4 - 0.5, 6 - 4 - 0.5, 8, 8), (18 - 8 - 0.5, 6 - 8 - 0.5, 16, 16)]
    # With imshow, pixel j spans j - 0.5 .. j + 0.5: the box edges lie on pixel borders.
    x_lo, x_hi = ax.get_xlim()
    assert (x_lo, x_hi) == (-0.5, 27.5)


def test_frame_size_is_fixed():
    assert pg.grid_shape(9) == (3, 3) and pg.grid_shape(4) == (2, 2)
    assert pg.grid_shape(5) == (2, 3)
    assert pg.frame_size(9) == (540, 580)
    assert pg.frame_size(4) == (360, 400)


def test_import_is_cheap():
    code = ("import sys; sys.path.insert(0, %r); import plot_glimpses; "
            "print([m for m in ('paddle', 'matplotlib', 'PIL') if m in sys.modules])"
            % str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- dump mode
def write_dumps(folder, epoch, n=9, T=4, seed=0):
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    g = ((rng.rand(n, 28, 28) - 0.1307) / 0.3081).astype(np.float32)
    l = rng.uniform(-1, 1, size=(T, n, 2)).astype(np.float32)
    for prefix, value in (("g", g), ("l", l)):
        with open(folder / f"{prefix}_{epoch}.p", "wb") as f:
            pickle.dump(value, f)


@pytest.mark.slow
def test_dump_mode_writes_gif_and_png(tmp_path):
    plot_dir = tmp_path / "plots" / "ram_4_6x6_2"
    write_dumps(plot_dir, 5, n=9, T=4)
    done = run("--plot_dir", plot_dir, "--epoch", 5, "--patch_size", 6, "--num_patches", 2,
               "--glimpse_scale", 2, "--ckpt_dir", tmp_path / "nockpt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert frames_of(plot_dir / "epoch_5.gif") == ((540, 580), 4)
    decodes(plot_dir / "epoch_5.png")


@pytest.mark.slow
def test_dump_mode_reads_params_json_and_latest_epoch(tmp_path):
    import json
    plot_dir = tmp_path / "plots" / "ram_2_4x4_1"
    write_dumps(plot_dir, 1, n=4, T=2)
    write_dumps(plot_dir, 3, n=4, T=2)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "ram_2_4x4_1_params.json").write_text(
        json.dumps({"patch_size": 4, "num_patches": 3, "glimpse_scale": 3}))

    class Args:
        ckpt_dir = str(tmp_path / "ckpt")
        patch_size = num_patches = glimpse_scale = None
    assert pg.retina_params(Args, str(plot_dir) + "/")[:3] == (4, 3, 3)
    Args.num_patches = 2
    assert pg.retina_params(Args, str(plot_dir))[:3] == (4, 2, 3)
    Args.ckpt_dir = str(tmp_path / "elsewhere")
    Args.num_patches = None
    assert pg.retina_params(Args, str(plot_dir))[:3] == (8, 1, 1)

    done = run("--plot_dir", plot_dir, "--ckpt_dir", tmp_path / "ckpt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert frames_of(plot_dir / "epoch_3.gif") == ((360, 400), 2)
    assert not (plot_dir / "epoch_1.gif").exists()


def test_missing_dump_fails_in_one_line(tmp_path):
    plot_dir = tmp_path / "ram_6_8x8_1"
    write_dumps(plot_dir, 1)
    assert_one_error_line(run("--plot_dir", plot_dir, "--epoch", 7))
    assert_one_error_line(run("--plot_dir", tmp_path / "nothing", "--epoch", 1))
    (plot_dir / "l_1.p").write_bytes(b"not a pickle")
    assert_one_error_line(run("--plot_dir", plot_dir, "--epoch", 1))


# ---------------------------------------------------------------------------- checkpoint mode
@pytest.fixture(scope="module")
def tiny_ckpt(mnist_dir, tmp_path_factory):
    """The first 20 MNIST test images and an untrained checkpoint with 3 glimpses."""
    import paddle
    import data_loader
    from model import RecurrentAttention
    tmp = tmp_path_factory.mktemp("tiny")
    images = data_loader.read_idx(str(mnist_dir / "t10k-images-idx3-ubyte.gz"))[:20]
    labels = data_loader.read_idx(str(mnist_dir / "t10k-labels-idx1-ubyte.gz"))[:20]
    data = tmp / "data"
    data.mkdir()
    write_idx(data / "t10k-images-idx3-ubyte.gz", images)
    write_idx(data / "t10k-labels-idx1-ubyte.gz", labels)
    paddle.seed(0)
    a = ARCH
    model = RecurrentAttention(a["patch_size"], a["num_patches"], a["glimpse_scale"], 1,
                               a["glimpse_hidden"], a["loc_hidden"], a["std"],
                               a["hidden_size"], 10)
    ckpt = tmp / "ram_3_4x4_3_model_best.pdparams"
    paddle.save({"epoch": 0, "model_state": model.state_dict(), "optim_state": {},
                 "best_valid_acc": 0.0, "config": dict(ARCH)}, str(ckpt))
    out = tmp / "out"
    done = run("--ckpt", ckpt, "--data_dir", data, "--num_images", 4, "--out", out,
               "--random_seed", 3, cwd=tmp)
    return dict(done=done, out=out, ckpt=ckpt, data=data, tmp=tmp)


@pytest.mark.slow
def test_ckpt_mode_writes_gif_png_and_retina(tiny_ckpt):
    done, out = tiny_ckpt["done"], tiny_ckpt["out"]
    assert done.returncode == 0, done.stderr
    for name in ("glimpses.gif", "glimpses.png", "retina.png"):  # every file, with its size
        assert f"[*] wrote {out / name} (" in done.stdout, done.stdout
    # num_glimpses frames, 2x2 grid for 4 images, fixed size at 80 dpi.
    assert frames_of(out / "glimpses.gif") == ((360, 400), 3)
    w, h = decodes(out / "glimpses.png")
    assert h > w  # one row per image, 1 + T columns: 4 x 4 panels plus the title
    decodes(out / "retina.png")
    assert not (out / "glimpses.mp4").exists() or pg.shutil.which("ffmpeg")


@pytest.mark.slow
def test_ckpt_mode_boxes_follow_the_model(tiny_ckpt):
    """The locations drawn are the model's own rollout, and its patches are the Retina's."""
    import data_loader
    from checkpoint import load_model
    model, cfg = load_model(str(tiny_ckpt["ckpt"]))
    assert {k: getattr(cfg, k) for k in ARCH} == ARCH
    images, _ = data_loader.load_mnist(str(tiny_ckpt["data"]), "test")
    x = data_loader.pixels(images[:4])
    seen = data_loader.normalize(images[:4])         # what the retina sees of x
    locs, pred, patches = pg.run_model(model, x, 3, seed=3, std=cfg.eval_std)
    assert locs.shape == (3, 4, 2) and pred.shape == (4,) and patches.shape == (3, 4, 3, 4, 4)
    again = pg.run_model(model, x, 3, seed=3, std=cfg.eval_std)
    assert np.array_equal(locs, again[0])          # seeded: the plot is repeatable
    g, k, s = 4, 3, 2
    for t in range(3):
        for b in range(4):
            x0, y0, size = pg.glimpse_boxes(locs[t, b], 28, 28, g, k, s)[0]
            assert np.allclose(pg.crop_box(seen[b, 0], (x0, y0, size)), patches[t, b, 0])
            # the widest box, average-pooled, is the last patch the network received
            x0, y0, size = pg.glimpse_boxes(locs[t, b], 28, 28, g, k, s)[2]
            wide = pg.crop_box(seen[b, 0], (x0, y0, size)).reshape(g, 4, g, 4).mean((1, 3))
            assert np.allclose(wide, patches[t, b, 2], atol=1e-5)


@pytest.mark.slow
def test_missing_or_corrupt_checkpoint_fails_in_one_line(tmp_path, tiny_ckpt):
    assert_one_error_line(run("--ckpt", tmp_path / "nope.pdparams", "--data_dir",
                              tiny_ckpt["data"], "--out", tmp_path / "o"))
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"garbage")
    assert_one_error_line(run("--ckpt", bad, "--data_dir", tiny_ckpt["data"],
                              "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_mp4_with_ffmpeg_on_path(tmp_path, monkeypatch):
    """With an ffmpeg on PATH the frames are piped to it; a failing one only warns."""
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncat > "$(dirname "$0")/stdin.raw"\n'
                    'for a; do last="$a"; done\n: > "$last"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ["PATH"])
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    written = pg.write_animation(frames, str(tmp_path / "anim"))
    assert written == [str(tmp_path / "anim.gif"), str(tmp_path / "anim.mp4")]
    assert (fake.parent / "stdin.raw").stat().st_size == 3 * 4 * 6 * 3
    fake.write_text("#!/bin/sh\necho boom >&2\nexit 1\n")
    assert pg.save_mp4(frames, str(tmp_path / "b.mp4")) is None


# ---------------------------------------------------------------------------- curves
def record(epoch, lr, train_acc, val_loss, val_acc, total_min, **extra):
    return json.dumps(dict(epoch=epoch, lr=lr, std=0.1, train_loss=2.0, train_acc=train_acc,
                           val_loss=val_loss, val_acc=val_acc, total_min=total_min, **extra))


# A resumed run repeats epoch 2: the last record of an epoch counts.
METRICS = "\n".join([record(1, 3e-4, 12.0, 2.2, 20.0, 0.7),
                     record(2, 3e-4, 25.0, 1.9, 35.0, 1.3),
                     record(2, 3e-4, 36.92, 1.8041, 46.43, 1.3, found=81.5),
                     record(3, 2.4e-4, 40.0, 1.7, 45.0, 2.0, found=82.0)]) + "\n"


def test_read_metrics_keeps_the_last_record_of_an_epoch(tmp_path):
    path = tmp_path / "ram_6_8x8_1_metrics.jsonl"
    path.write_text(METRICS)
    c = pg.read_metrics(str(path))
    assert c["epoch"].tolist() == [1, 2, 3]
    assert c["train_acc"].tolist() == [12.0, 36.92, 40.0]
    assert c["val_loss"].tolist() == [2.2, 1.8041, 1.7]
    assert c["total_min"].tolist() == [0.7, 1.3, 2.0]
    assert c["lr"].tolist() == [3e-4, 3e-4, 2.4e-4]
    assert np.isnan(c["found"][0]) and c["found"][1:].tolist() == [81.5, 82.0]


def test_plot_curves_writes_png(tmp_path):
    path = tmp_path / "logs" / "ram_6_8x8_1_metrics.jsonl"
    path.parent.mkdir()
    path.write_text(METRICS)
    out = tmp_path / "c.png"
    assert pg.plot_curves(str(path), str(out)) == str(out)
    assert decodes(out) == (960, 288)
    # CLI default: plots/<name>_curves.png under the working directory.
    done = run("--curves", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    decodes(tmp_path / "plots" / "ram_6_8x8_1_curves.png")
    assert "[*] wrote plots/ram_6_8x8_1_curves.png (" in done.stdout and "KiB)" in done.stdout


def test_compare_runs_table_and_png(tmp_path):
    """Two runs side by side: best validation accuracy (epoch), the share found there, and the
    mean of the last `window` epochs up to every `every`-th; the second run is shorter
    ('-' past its end)."""
    a, b = tmp_path / "a_metrics.jsonl", tmp_path / "b_metrics.jsonl"
    a.write_text(METRICS)
    b.write_text("\n".join(METRICS.splitlines()[:2]))  # epochs 1-2 only
    png, table = pg.compare_runs([str(a), str(b)], str(tmp_path / "cmp.png"), every=2, window=2,
                                 target_err=60)
    assert decodes(png) == (960, 336)
    header, row_a, row_b = [line.split() for line in table.splitlines()]
    assert header == ["run", "best", "val", "(epoch)", "found", "err<=60%", "at", "@2"]
    # a: first at most 60% error at epoch 2 (53.57%), 1.3 logged minutes in
    assert row_a == [str(a), "46.43", "(2)", "81.5", "2", "(1.3", "min)",
                     f"{(20.00 + 46.43) / 2:.2f}/81.5"]   # found: epoch 1 has none
    assert row_b == [str(b), "35.00", "(2)", "-", "-", "27.50"]  # b never got below 65%
    done = run("--compare", a, b, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "46.43 (2)" in done.stdout
    decodes(tmp_path / "plots" / "compare.png")
    assert_one_error_line(run("--compare", a, tmp_path / "missing.jsonl", cwd=tmp_path))


def test_compare_runs_since_a_branch_at_equal_minutes(tmp_path):
    """Two runs branching at epoch 10, the pilot's epochs twice as long: --since 10 leaves out
    the control's earlier epochs, --minutes puts both on the minutes since their first epoch
    after the branch began, and each mark shows the accuracy/found of the last epoch by then
    ('-' past a run's end)."""
    control, pilot = tmp_path / "control_metrics.jsonl", tmp_path / "pilot_metrics.jsonl"
    control.write_text("\n".join(
        record(e, 3e-4, 90.0, 0.3, 80.0 + e, 90.0 + e, secs=60.0, found=70.0 + e)
        for e in range(5, 15)))                      # epoch 10 ends at 100 min, one per minute
    pilot.write_text("\n".join(
        record(e, 3e-4, 90.0, 0.3, 85.0 + e, 100.0 + 2 * (e - 10), secs=120.0, found=75.0 + e)
        for e in (11, 12, 13)))                      # two minutes each
    png, table = pg.compare_runs([str(control), str(pilot)], str(tmp_path / "cmp.png"),
                                 every=2, window=1, since=10, minutes=True)
    decodes(png)
    header, row_c, row_p = [line.split() for line in table.splitlines()]
    assert header[-6:] == ["@2", "min", "@4", "min", "@6", "min"]
    assert row_c[1:4] == ["94.00", "(14)", "84.0"]            # the epochs before 11 left out
    assert row_c[-3:] == ["92.00/82.0", "94.00/84.0", "-"]   # epochs 12 and 14; ended at 4 min
    assert row_p[-3:] == ["96.00/86.0", "97.00/87.0", "98.00/88.0"]  # epochs 11, 12, 13
    done = run("--compare", control, pilot, "--since", 10, "--minutes", "--every", 2,
               "--out", tmp_path / "c.png")
    assert done.returncode == 0, done.stderr
    assert "@6 min" in done.stdout
    assert_one_error_line(run("--compare", control, "--since", 20, cwd=tmp_path))
    # By epoch, the marks start after the branch: epochs 12 and 14 (window 1).
    _, table = pg.compare_runs([str(control), str(pilot)], str(tmp_path / "e.png"), every=2,
                               window=1, since=10)
    header, row_c, row_p = [line.split() for line in table.splitlines()]
    assert header[-2:] == ["@12", "@14"]
    assert row_c[-2:] == ["92.00/82.0", "94.00/84.0"] and row_p[-2:] == ["97.00/87.0", "-"]


def test_elapsed_minutes_without_epoch_seconds_takes_a_typical_epoch():
    c = {"total_min": np.array([10.0, 12.0, 14.0, 17.0]), "secs": np.full(4, np.nan)}
    assert pg.elapsed_minutes(c, "x").tolist() == [2.0, 4.0, 6.0, 9.0]
    c["total_min"][1] = np.nan
    with pytest.raises(pg.RamError, match="without logged minutes"):
        pg.elapsed_minutes(c, "x")


def _test_record(err, M=1, default_std=True, seed=1):
    return json.dumps({"seed": seed, "M": M, "std": 0.02, "default_std": default_std,
                       "correct": 10000 - int(err * 100), "n": 10000, "error": err}) + "\n"


def test_results_figure_means_the_default_protocol_runs(tmp_path):
    """Each task's bars are means over the recorded seeds, per M; a test at another
    --eval_std is not the table's protocol and stays out; a task without records has no
    group."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "eval_ram_6_8x8_1.jsonl").write_text(
        _test_record(1.0) + _test_record(1.2, seed=2) + _test_record(0.5, M=10)
        + _test_record(3.0, default_std=False))
    (logs / "eval_ram_6_12x12_3_cluttered60.jsonl").write_text(_test_record(6.0))
    (logs / "eval_reference.jsonl").write_text(_test_record(1.3))
    png, table = pg.plot_results(str(logs), str(tmp_path / "r.png"))
    decodes(png)
    header, mnist, cluttered = [line.split("  ") for line in table.splitlines()]
    assert [v.strip() for v in mnist if v.strip()] == ["28x28", "1.12", "1.30", "1.10", "0.50"]
    assert [v.strip() for v in cluttered if v.strip()] == ["cluttered 60x60", "4.08", "-", "6.00",
                                                           "-"]
    done = run("--results", logs, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    decodes(tmp_path / "plots" / "results.png")
    assert_one_error_line(run("--results", tmp_path, cwd=tmp_path))  # no records there


@pytest.mark.slow
def test_a_test_run_appends_its_record(tiny_run, tiny_data, tmp_path):
    from conftest import run_main
    ckpt = tiny_run.ckpt_dir / "ram_2_8x8_1_model_best.pdparams"
    for extra in ([], ["--eval_std", "0"]):
        res = run_main(["--is_train=False", "--ckpt", ckpt, "--data_dir", tiny_data,
                        "--logs_dir", tmp_path, *extra], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    first, second = [json.loads(line) for line in
                     (tmp_path / "ram_2_8x8_1_test.jsonl").read_text().splitlines()]
    assert first["n"] == 300 and first["M"] == 1 and first["default_std"] is True
    assert first["std"] == 0.02 and second["std"] == 0 and second["default_std"] is False
    assert f"Test Acc: {first['correct']}/300" in res.stdout or second["correct"] >= 0
    assert {"found", "err_found", "err_lost", "dist"} <= set(first)
    assert pg.read_test_records(str(tmp_path / "ram_2_8x8_1_test.jsonl")) == {1: [first["error"]]}


def test_curves_errors_are_one_line(tmp_path):
    assert_one_error_line(run("--curves", tmp_path / "missing.jsonl", cwd=tmp_path))
    empty = tmp_path / "empty_metrics.jsonl"
    empty.write_text("")
    assert_one_error_line(run("--curves", empty, cwd=tmp_path))
    log = tmp_path / "ram_6_8x8_1.log"  # a text log is not a metrics file
    log.write_text("[*] ram_6_8x8_1 on cpu: nothing yet\n")
    assert_one_error_line(run("--curves", log, cwd=tmp_path))
    assert not (tmp_path / "plots").exists()


def test_short_labels_drop_what_all_paths_share():
    assert pg.short_labels(["logs/tuning/a/x_metrics.jsonl", "logs/tuning/b2/x_metrics.jsonl"]) \
        == ["a", "b2"]
    assert pg.short_labels(["logs/x_metrics.jsonl"]) == ["x"]
    same = ["logs/x_metrics.jsonl", "logs/x_metrics.jsonl"]   # nothing tells them apart
    assert pg.short_labels(same) == same
