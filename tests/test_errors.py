"""Bad input to main.py: one clear line on stderr, no traceback, a non-zero exit code."""
import gzip
import shutil
import time

import numpy as np
import paddle
import pytest

from config import get_config, notes
from conftest import MNIST_FILES, assert_one_error_line, idx_bytes, run_main, stderr_lines
from utils import RamError

NAME = "ram_2_8x8_1"


def common(tmp_path):
    return ["--ckpt_dir", tmp_path / "ckpt", "--logs_dir", tmp_path / "logs",
            "--plot_dir", tmp_path / "plots"]


# ------------------------------------------------------------------ impossible configs
def config_error(*args):
    """get_config's message for these flags: what main.py prints after 'error: '."""
    with pytest.raises(RamError) as e:
        get_config([str(a) for a in args])
    return str(e.value)


@pytest.mark.parametrize("flag,value", [
    ("--patch_size", "0"), ("--num_patches", "0"), ("--glimpse_scale", "0"),
    ("--valid_size", "1.0"), ("--num_glimpses", "0"), ("--std", "0.0"), ("--batch_size", "0"),
    ("--random_seed", "-1"), ("--random_seed", str(2 ** 32)), ("--rollouts", "0"),
    ("--clip_grad", "-1.0"), ("--keep_ckpts", "0"), ("--save_freq", "0"), ("--M", "0"),
])
def test_impossible_config(flag, value):
    message = config_error(flag, value)
    assert message.startswith(f"{flag} must be") and f"(got {value})" in message


@pytest.mark.parametrize("args,needle", [
    (["--valid_size", "0"], "--valid_size 0"),
    (["--patch_size", "64"], "--patch_size 64 is wider than the 28x28 images"),
    (["--dataset", "translated", "--canvas", "20"], "--canvas must be >= 28"),
    (["--epochs", "0"], "--epochs 0 trains nothing"),
    (["--export", "out"], "add --is_train=False"),
])
def test_config_that_cannot_apply(args, needle):
    assert needle in config_error(*args)


def test_a_widest_patch_beyond_the_image_is_a_note():
    config, _ = get_config(["--patch_size", "12", "--glimpse_scale", "2", "--num_patches", "3"])
    said = notes(config)
    assert len(said) == 1 and "the widest patch is 48x48 pixels on 28x28 images" in said[0]
    shipped, _ = get_config(["--dataset", "cluttered", "--canvas", "100", "--patch_size", "12",
                             "--glimpse_scale", "2", "--num_patches", "4"])
    assert notes(shipped) == []  # 96x96 on 100x100


def test_impossible_config_through_main_writes_nothing(tmp_path):
    """End to end: one 'error:' line, exit code 2, rejected before anything is written."""
    res = run_main(["--patch_size", "0", "--data_dir", tmp_path / "nowhere", *common(tmp_path)],
                   cwd=tmp_path, timeout=60)
    assert assert_one_error_line(res, "--patch_size", "(got 0)").startswith(
        "error: --patch_size must be")
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------ bool flags
def test_non_boolean_value_for_bool_flag(tmp_path):
    res = run_main(["--is_train", "maybe", *common(tmp_path)], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = stderr_lines(res)
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    assert "argument --is_train: expected True or False, got 'maybe'" in errors[0]


def test_non_boolean_value_gives_exactly_one_stderr_line(tmp_path):
    res = run_main(["--use_tensorboard=Flase", *common(tmp_path)], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert len(stderr_lines(res)) == 1, res.stderr


# ------------------------------------------------------------------ data
def run_missing_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    home = tmp_path / "home"        # an empty ~/.cache/paddle: nothing to fall back on
    home.mkdir()
    tic = time.time()
    res = run_main(["--data_dir", empty, "--epochs", "1", *common(tmp_path)], cwd=tmp_path,
                   timeout=90, HOME=home)
    return res, time.time() - tic, empty


def test_missing_data_dir_names_the_expected_files(tmp_path):
    res, secs, empty = run_missing_data(tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    last = stderr_lines(res)[-1]
    assert last.startswith("error: MNIST train files not found in " + str(empty))
    for name in MNIST_FILES:  # all four, and where to get them
        assert name in last, name
    assert "--data_dir" in last and "https://" in last
    assert secs < 60                                # the offline download gives up quickly


@pytest.mark.slow
def test_missing_test_data_names_the_test_files(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "home").mkdir()
    res = run_main(["--is_train=False", "--ckpt", tiny_run.ckpt_dir / f"{NAME}_ckpt2.pdparams",
                    "--data_dir", tmp_path / "empty", "--logs_dir", tmp_path / "logs"],
                   cwd=tmp_path, timeout=90, HOME=tmp_path / "home")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    last = stderr_lines(res)[-1]
    assert last.startswith("error: MNIST test files not found")
    assert "t10k-images-idx3-ubyte.gz" in last and "t10k-labels-idx1-ubyte.gz" in last


def test_missing_data_dir_gives_exactly_one_stderr_line(tmp_path):
    res, _, _ = run_missing_data(tmp_path)
    assert_one_error_line(res, "train-images-idx3-ubyte.gz")


def make_data_dir(tiny_data, dst, broken=None, content=None):
    """A copy of the tiny data with one file replaced by `content` bytes."""
    shutil.copytree(tiny_data, dst)
    if broken:
        (dst / broken).write_bytes(content)
    return dst


def truncated_gzip(path):
    raw = path.read_bytes()
    return raw[:len(raw) // 2]


def wrong_magic(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return gzip.compress(bytes([0, 0, 9, 3]) + raw[4:])


def short_payload(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return gzip.compress(raw[:-100])


@pytest.mark.parametrize("corrupt,needle", [
    (truncated_gzip, "cannot read MNIST file"),
    (wrong_magic, "is not the MNIST idx file expected: magic number 0x00000903"),
    (short_payload, "is truncated or corrupt"),
])
def test_corrupt_data_file(tiny_data, tmp_path, corrupt, needle):
    name = "train-images-idx3-ubyte.gz"
    data = make_data_dir(tiny_data, tmp_path / "data", name, corrupt(tiny_data / name))
    res = run_main(["--data_dir", data, "--epochs", "1", *common(tmp_path)], cwd=tmp_path,
                   timeout=90)
    assert_one_error_line(res, needle, data / name)


def test_disagreeing_image_and_label_files(tiny_data, tmp_path):
    labels = np.zeros(599, dtype=np.uint8)
    data = make_data_dir(tiny_data, tmp_path / "data", "train-labels-idx1-ubyte.gz",
                         gzip.compress(idx_bytes(labels)))
    res = run_main(["--data_dir", data, "--epochs", "1", *common(tmp_path)], cwd=tmp_path,
                   timeout=90)
    assert_one_error_line(res, "disagree", "(600, 28, 28)", "(599,)")


# ------------------------------------------------------------------ checkpoints
@pytest.mark.slow
def test_missing_checkpoint_lists_the_folder(ckpt_copy, tmp_path):
    res = run_main(["--is_train=False", "--ckpt", ckpt_copy / f"{NAME}_ckpt7.pdparams",
                    "--logs_dir", tmp_path / "logs"], cwd=tmp_path, timeout=60)
    assert_one_error_line(res, f"{NAME}_ckpt7.pdparams not found",
                          f"{NAME}_ckpt1.pdparams, {NAME}_ckpt2.pdparams, "
                          f"{NAME}_model_best.pdparams")


def test_missing_checkpoint_in_empty_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    res = run_main(["--is_train=False", *common(tmp_path)], cwd=tmp_path, timeout=60)
    assert_one_error_line(res, "no best checkpoint of ram_6_8x8_1", "no .pdparams files")


def test_resume_without_checkpoint(tmp_path):
    res = run_main(["--resume=True", "--best", "False", *common(tmp_path)], cwd=tmp_path,
                   timeout=60)
    assert_one_error_line(res, "no latest checkpoint of ram_6_8x8_1", "--ckpt FILE")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random_bytes", "truncated", "not_a_ram_checkpoint"])
def test_corrupt_checkpoint(tiny_run, tmp_path, kind):
    ck = tmp_path / "ckpt"
    ck.mkdir()
    target = ck / f"{NAME}_model_best.pdparams"
    if kind == "random_bytes":
        target.write_bytes(np.random.RandomState(0).bytes(4096))
        needle = "cannot read checkpoint"
    elif kind == "truncated":
        raw = (tiny_run.ckpt_dir / target.name).read_bytes()
        target.write_bytes(raw[:len(raw) // 3])
        needle = "cannot read checkpoint"
    else:
        paddle.save({"weights": paddle.zeros([2])}, str(target))
        needle = "is not a RAM checkpoint"
    res = run_main(["--is_train=False", "--num_glimpses", "2", *common(tmp_path)], cwd=tmp_path,
                   timeout=60)
    assert_one_error_line(res, needle, target.name)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_architecture(tiny_run, tmp_path):
    """Flags given on resume override the stored config, but not the architecture."""
    res = run_main(["--resume=True", "--ckpt_dir", tiny_run.ckpt_dir, "--num_glimpses", "2",
                    "--hidden_size", "64", "--logs_dir", tmp_path / "logs"],
                   cwd=tmp_path, timeout=60)
    assert_one_error_line(res, "trained with --hidden_size 256, not 64", "drop --hidden_size")
