"""Work is never lost or clobbered: shipped files, another run's checkpoints, concurrent runs,
divergence, exact resumption inside an epoch, file-system failures and bad input files."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, acc_lines, epoch_lines, load_ckpt, run_main, train_args
from test_errors import assert_one_error_line

NAME = "ram_2_8x8_1"


def digest(folder):
    """{relative path: sha256} of every file below folder but the run lock."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name == ".ram.lock":  # the run lock records its holder's PID
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ------------------------------------------------------------------ shipped files
@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--ckpt_dir", "--logs_dir", "--plot_dir"])
def test_training_into_a_shipped_folder_is_refused(tiny_data, tmp_path, flag):
    shipped = {"--ckpt_dir": ROOT / "ckpt", "--logs_dir": ROOT / "logs",
               "--plot_dir": ROOT / "plots"}[flag] / "pretrained"
    before = digest(shipped)
    args = train_args(tiny_data, tmp_path, "--epochs", "1")
    args[args.index(flag) + 1] = shipped
    res = run_main(args, cwd=tmp_path, timeout=120)
    assert_one_error_line(res, flag, "shipped", "pretrained")
    assert digest(shipped) == before


def test_default_output_folders_are_not_the_shipped_ones():
    from config import get_config
    from utils import check_not_pretrained
    c, _ = get_config([])
    for flag in ("ckpt_dir", "logs_dir", "plot_dir"):
        check_not_pretrained(os.path.join(ROOT, getattr(c, flag)), "--" + flag)  # no error


@pytest.mark.slow
def test_testing_logs_apart_and_names_its_checkpoint(tiny_run, tiny_data, tmp_path):
    """A test run leaves the training log alone, writes <name>_test.log, and says which file
    it evaluated on the line before the unchanged Test Acc line."""
    logs = tmp_path / "logs"
    shutil.copytree(tiny_run.logs_dir, logs)
    before = (logs / f"{NAME}.log").read_text()
    best = tiny_run.ckpt_dir / f"{NAME}_model_best.pdparams"
    res = run_main(["--is_train=False", "--data_dir", tiny_data, "--logs_dir", logs,
                    "--ckpt_dir", tiny_run.ckpt_dir, "--num_glimpses", "2"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (logs / f"{NAME}.log").read_text() == before
    test_log = (logs / f"{NAME}_test.log").read_text()
    assert len(acc_lines(test_log)) == 1
    lines = res.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("[*] Test Acc:"))
    assert lines[i - 1].startswith(f"[*] Checkpoint {best}: epoch {load_ckpt(best)['epoch']}, {NAME}")


# ------------------------------------------------------------------ another run's checkpoints
@pytest.mark.slow
def test_fresh_run_refuses_to_overwrite_checkpoints(tiny_data, ckpt_copy, tmp_path):
    before = digest(ckpt_copy)
    args = train_args(tiny_data, tmp_path, "--epochs", "1")
    res = run_main(args, cwd=tmp_path, timeout=120)
    assert_one_error_line(res, str(ckpt_copy), f"{NAME}_ckpt1.pdparams", "--resume=True",
                          "--ckpt_dir")
    assert digest(ckpt_copy) == before


@pytest.mark.slow
def test_a_second_run_on_a_locked_folder_is_refused(tiny_data, tmp_path):
    from checkpoint import RunLock
    (tmp_path / "ckpt").mkdir()
    lock = RunLock(str(tmp_path / "ckpt"))  # this process plays the first run
    try:
        res = run_main(train_args(tiny_data, tmp_path, "--epochs", "1"), cwd=tmp_path, timeout=120)
        assert_one_error_line(res, f"PID {os.getpid()}", str(tmp_path / "ckpt"))
    finally:
        lock.release()
    # The lock file stays behind, as after kill -9: it locks nothing once its holder is gone.
    assert (tmp_path / "ckpt" / ".ram.lock").exists()
    res = run_main(train_args(tiny_data, tmp_path, "--epochs", "1"), cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_stale_temporaries_of_dead_runs_are_removed(tiny_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = ckpt / f"{NAME}_ckpt1.pdparams.tmp{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    res = run_main(train_args(tiny_data, tmp_path, "--epochs", "1"), cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not stale.exists() and f"Removed {stale}" in res.stdout
    assert not list(ckpt.glob("*.tmp*"))


# ------------------------------------------------------------------ divergence
def poisoned(src, dst, scale=None, nan=False):
    """A copy of checkpoint src with the core's weights scaled (training then blows up) or
    one weight set to NaN."""
    state = load_ckpt(src)
    w = np.asarray(state["model_state"]["rnn.h2h.weight"]).copy()
    if nan:
        w[0, 0] = np.nan
    else:
        w *= scale
    state["model_state"]["rnn.h2h.weight"] = paddle.to_tensor(w)
    paddle.save(state, str(dst))
    return dst


@pytest.mark.slow
def test_divergence_stops_with_one_line_and_saves_nothing(tiny_data, ckpt_copy, tmp_path):
    bad = poisoned(ckpt_copy / f"{NAME}_ckpt2.pdparams", tmp_path / "exploding.pdparams", 1e30)
    before = {k: v for k, v in digest(ckpt_copy).items() if k.endswith(".pdparams")}
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--ckpt", bad, "--epochs", "4",
                              "--save_freq", "1"), cwd=tmp_path, timeout=240)
    line = assert_one_error_line(res, "training diverged", "epoch 3", "--init_lr")
    assert "last good checkpoints are" in line
    after = {k: v for k, v in digest(ckpt_copy).items() if k.endswith(".pdparams")}
    assert after == before                              # best and epoch files untouched
    assert not (ckpt_copy / f"{NAME}_interrupted.pdparams").exists()


def test_check_loss_flags_non_finite_and_exploded_losses():
    from types import SimpleNamespace
    from trainer import Trainer
    t = Trainer.__new__(Trainer)
    t.epoch, t.last_good = 4, None
    t.name = "ram_6_8x8_1"
    t.config = SimpleNamespace(init_lr=0.3, ckpt_dir="nowhere")
    assert t._check_loss(paddle.to_tensor(12.0), 4) == 3.0
    from utils import RamError
    for value in (float("nan"), float("inf"), 1e18):
        with pytest.raises(RamError, match=r"diverged .*epoch 5, batch 7.*--init_lr \(now 0.3\)"):
            t._check_loss(paddle.to_tensor(value), 1, 7)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["test", "resume"])
def test_checkpoint_with_nan_weights_is_one_line(tiny_data, ckpt_copy, tmp_path, mode):
    bad = poisoned(ckpt_copy / f"{NAME}_ckpt2.pdparams", tmp_path / "nan.pdparams", nan=True)
    extra = ["--is_train=False"] if mode == "test" else ["--resume=True", "--epochs", "3"]
    res = run_main(train_args(tiny_data, tmp_path, "--ckpt", bad, *extra), cwd=tmp_path, timeout=120)
    assert_one_error_line(res, str(bad), "non-finite weights", "rnn.h2h.weight")


def test_nan_locations_do_not_index_outside_the_image():
    from modules import Retina
    x = paddle.rand([2, 1, 28, 28])
    l = paddle.to_tensor([[float("nan"), 0.3], [0.1, float("nan")]])
    retina = Retina(8, 2, 2)
    phi = retina.foveate(retina.scene(x), l)
    assert phi.shape == [2, 2 * 64] and bool(paddle.isfinite(phi).all())


# ------------------------------------------------------------------ exact resumption
@pytest.mark.slow
def test_interrupted_mid_epoch_resumes_bit_identical(tiny_data, tmp_path, monkeypatch):
    """Ctrl-C after batch 5 of epoch 2, then --resume: the same weights, optimiser state and
    epoch lines as a run never interrupted."""
    import main as main_module
    import trainer as trainer_module

    def run(work, *extra):
        return main_module.main([str(a) for a in train_args(tiny_data, work, *extra)])

    assert run(tmp_path / "straight", "--epochs", "3") == 0
    calls = {"n": 0}
    step = trainer_module.Trainer.train_step

    def interrupting_step(self, *a, **k):
        calls["n"] += 1
        out = step(self, *a, **k)
        if calls["n"] == 17 + 5:  # 17 batches an epoch: batch 5 of epoch 2
            self.stopped_by = signal.SIGINT
        return out

    monkeypatch.setattr(trainer_module.Trainer, "train_step", interrupting_step)
    assert run(tmp_path / "split", "--epochs", "3") == 130
    monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
    interrupted = tmp_path / "split" / "ckpt" / f"{NAME}_interrupted.pdparams"
    position = load_ckpt(interrupted)["position"]
    assert load_ckpt(interrupted)["epoch"] == 1 and position["batches"] == 5
    assert run(tmp_path / "split", "--epochs", "3", "--resume=True", "--ckpt", interrupted) == 0
    a = load_ckpt(tmp_path / "straight" / "ckpt" / f"{NAME}_ckpt3.pdparams")
    b = load_ckpt(tmp_path / "split" / "ckpt" / f"{NAME}_ckpt3.pdparams")
    for key in a["model_state"]:
        np.testing.assert_array_equal(np.asarray(a["model_state"][key]),
                                      np.asarray(b["model_state"][key]), err_msg=key)
    for key, value in a["optim_state"].items():
        if key != "LR_Scheduler":
            np.testing.assert_array_equal(np.asarray(value), np.asarray(b["optim_state"][key]),
                                          err_msg=key)
    logs = [(w / "logs" / f"{NAME}.log").read_text() for w in (tmp_path / "straight", tmp_path / "split")]
    straight = [line.split("|")[:4] for line in logs[0].splitlines() if line.startswith("epoch ")]
    split = [line.split("|")[:4] for line in logs[1].splitlines() if line.startswith("epoch ")]
    assert straight == split and len(straight) == 3
    assert "after batch 5" in logs[1] and "from batch 6" in logs[1]


@pytest.mark.slow
def test_epochs_not_above_the_resumed_epoch(tiny_data, ckpt_copy, tmp_path):
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--best", "False",
                              "--epochs", "2"), cwd=tmp_path, timeout=120)
    assert_one_error_line(res, "--epochs 2", "2 epochs", "--epochs 102")


# ------------------------------------------------------------------ file-system failures
@pytest.mark.parametrize("flag", ["--ckpt_dir", "--logs_dir"])
def test_a_file_where_a_folder_should_be(tiny_data, tmp_path, flag):
    args = train_args(tiny_data, tmp_path, "--epochs", "1")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    args[args.index(flag) + 1] = blocker
    assert_one_error_line(run_main(args, cwd=tmp_path, timeout=120), flag, str(blocker),
                          "is a file, not a folder")


@pytest.mark.slow
def test_plots_that_cannot_be_written_never_stop_training(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path, "--epochs", "1", "--plot_freq", "1")
    (tmp_path / "blocker").write_text("not a folder")
    args[args.index("--plot_dir") + 1] = tmp_path / "blocker"
    res = run_main(args, cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "training goes on without plots" in res.stdout and "No learning curves" in res.stdout
    assert (tmp_path / "ckpt" / f"{NAME}_ckpt1.pdparams").exists()


def test_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno
    from checkpoint import save as atomic_save
    from utils import RamError

    def full(obj, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paddle, "save", full)
    (tmp_path / "old.pdparams").write_bytes(b"previous")
    with pytest.raises(RamError, match="No space left on device.*intact"):
        atomic_save({"a": 1}, str(tmp_path / "old.pdparams"))
    assert os.listdir(tmp_path) == ["old.pdparams"]
    assert (tmp_path / "old.pdparams").read_bytes() == b"previous"


@pytest.mark.slow
def test_a_failing_glimpse_dump_is_a_warning(tiny_data, tmp_path, monkeypatch):
    import main as main_module
    import pickle as pickle_module

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pickle_module, "dump", broken)
    code = main_module.main([str(a) for a in train_args(tiny_data, tmp_path, "--epochs", "1",
                                                        "--plot_freq", "1")])
    assert code == 0
    log = (tmp_path / "logs" / f"{NAME}.log").read_text()
    assert "Glimpses of epoch 1 not saved" in log and epoch_lines(log)


# ------------------------------------------------------------------ bad input files and flags
def copy_data(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_labels_outside_the_classes(tiny_data, tmp_path):
    from conftest import write_idx
    from data_loader import read_idx
    data = copy_data(tiny_data, tmp_path / "data")
    path = data / "train-labels-idx1-ubyte.gz"
    labels = read_idx(str(path)).copy()
    labels[7] = 12
    write_idx(path, labels)
    res = run_main(train_args(data, tmp_path, "--epochs", "1"), cwd=tmp_path, timeout=120)
    assert_one_error_line(res, str(path), "label 12", "index 7")


def test_wrong_idx_magic_says_so(tiny_data, tmp_path):
    data = copy_data(tiny_data, tmp_path / "data")
    images, labels = data / "train-images-idx3-ubyte.gz", data / "train-labels-idx1-ubyte.gz"
    shutil.copy(images, labels)  # an images file where the labels should be
    res = run_main(train_args(data, tmp_path, "--epochs", "1"), cwd=tmp_path, timeout=120)
    assert_one_error_line(res, str(labels), "magic number 0x00000803 (images)",
                          "expected 0x00000801 (labels)")


def test_a_canvas_too_large_for_memory(tmp_path):
    res = run_main(["--dataset", "translated", "--canvas", "200000", *train_args(
        tmp_path / "nowhere", tmp_path)], cwd=tmp_path, timeout=60)
    assert_one_error_line(res, "--canvas 200000", "GiB", "smaller --canvas")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("args,note", [
    (["--rollouts", "2", "--reinforce_weight", "0"], "--rollouts has no effect"),
])
def test_flags_without_effect_get_a_note(args, note):
    from config import get_config, notes
    assert any(note in n for n in notes(get_config(args)[0]))


def test_torch_checkpoint_points_at_align(tmp_path):
    import zipfile
    pth = tmp_path / "ram.pth"
    with zipfile.ZipFile(pth, "w") as z:
        z.writestr("archive/data.pkl", b"not really")
    res = run_main(["--is_train=False", "--ckpt", pth, "--data_dir", tmp_path,
                    "--logs_dir", tmp_path / "logs"], cwd=tmp_path, timeout=60)
    assert_one_error_line(res, str(pth), "PyTorch", "align.py --torch_ckpt")


@pytest.mark.slow
def test_interrupted_again_before_the_first_resumed_batch(tiny_data, tmp_path, monkeypatch):
    """Stopped after batch 5 of epoch 1, resumed and stopped again before any batch ran, then
    resumed once more: still the uninterrupted run's weights."""
    import main as main_module
    import trainer as trainer_module

    def run(work, *extra):
        return main_module.main([str(a) for a in train_args(tiny_data, work, *extra)])

    assert run(tmp_path / "straight", "--epochs", "2") == 0
    step, epoch = trainer_module.Trainer.train_step, trainer_module.Trainer.train_one_epoch
    calls = {"n": 0}

    def interrupting_step(self, *a, **k):
        calls["n"] += 1
        out = step(self, *a, **k)
        if calls["n"] == 5:
            self.stopped_by = signal.SIGINT
        return out

    def stop_at_once(self, loader):
        self.stopped_by = signal.SIGINT  # before the resumed epoch's first batch
        return epoch(self, loader)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", interrupting_step)
    assert run(tmp_path / "split", "--epochs", "2") == 130
    interrupted = tmp_path / "split" / "ckpt" / f"{NAME}_interrupted.pdparams"
    monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
    monkeypatch.setattr(trainer_module.Trainer, "train_one_epoch", stop_at_once)
    assert run(tmp_path / "split", "--epochs", "2", "--resume=True", "--ckpt", interrupted) == 130
    assert load_ckpt(interrupted)["position"]["batches"] == 5
    monkeypatch.setattr(trainer_module.Trainer, "train_one_epoch", epoch)
    assert run(tmp_path / "split", "--epochs", "2", "--resume=True", "--ckpt", interrupted) == 0
    a = load_ckpt(tmp_path / "straight" / "ckpt" / f"{NAME}_ckpt2.pdparams")["model_state"]
    b = load_ckpt(tmp_path / "split" / "ckpt" / f"{NAME}_ckpt2.pdparams")["model_state"]
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
