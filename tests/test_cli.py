"""main.py end to end on a tiny MNIST: training, checkpoints, resume, test mode, Ctrl-C."""
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import (MAIN, acc_lines, beta1_pow, cli_env, epoch_lines, load_ckpt, log_line,
                      run_main, train_args)
from checkpoint import load_model
from config import EVAL_STD, MODE_KEYS, SPLIT_KEYS, get_config
from utils import ARCH_KEYS

pytestmark = pytest.mark.slow  # main.py training runs end to end

NAME = "ram_2_8x8_1"
INIT_LR = get_config([])[0].init_lr  # the runs here use the default learning rate
BATCHES_PER_EPOCH = 17            # ceil(540 / 32)
BETA1 = 0.9                       # Adam's default


def log_of(logs_dir):
    return (logs_dir / f"{NAME}.log").read_text()


# ------------------------------------------------------------------ a fresh 2-epoch run
def test_training_writes_checkpoints_logs_and_plots(tiny_run):
    ck = tiny_run.ckpt_dir
    for suffix in ("ckpt1.pdparams", "ckpt2.pdparams", "model_best.pdparams", "params.json"):
        assert (ck / f"{NAME}_{suffix}").is_file(), suffix
    assert not list(ck.glob("*.tmp*"))                     # atomic saves leave no temporaries
    log = log_of(tiny_run.logs_dir)
    epochs = epoch_lines(log)
    assert [(e, n) for e, n, _ in epochs] == [(1, 2), (2, 2)], log
    assert epochs[0][2] == pytest.approx(INIT_LR)
    assert "train on 540, validate on 60 images" in log
    assert "epoch 2/2" in tiny_run.result.stdout
    for name in ("g_1.p", "l_1.p", "g_2.p", "l_2.p"):        # plot_freq 1: a dump per epoch
        assert (tiny_run.plot_dir / NAME / name).is_file(), name
    params = json.loads((ck / f"{NAME}_params.json").read_text())
    assert params["num_glimpses"] == 2 and params["epochs"] == 2 and params["batch_size"] == 32


def test_checkpoint_contents(tiny_run):
    ck = tiny_run.ckpt_dir
    s1, s2 = load_ckpt(ck / f"{NAME}_ckpt1.pdparams"), load_ckpt(ck / f"{NAME}_ckpt2.pdparams")
    for key in ("epoch", "model_state", "optim_state", "best_valid_acc", "counter", "config"):
        assert key in s2, key
    assert s1["epoch"] == 1 and s2["epoch"] == 2
    assert s2["config"]["num_glimpses"] == 2 and s2["config"]["patch_size"] == 8
    assert list(s2["model_state"]["sensor.fc1.weight"].shape) == [64, 128]
    sched = s2["optim_state"]["LR_Scheduler"]
    assert sched["last_epoch"] == 2
    assert s1["optim_state"]["LR_Scheduler"]["last_lr"] == pytest.approx(INIT_LR)
    # Adam's beta1 power advanced one step per batch: 17 batches between the two checkpoints.
    assert beta1_pow(s2) / beta1_pow(s1) == pytest.approx(BETA1 ** BATCHES_PER_EPOCH, rel=1e-4)
    # counter and best_valid_acc agree with the validation accuracies in the log
    log = log_of(tiny_run.logs_dir)
    accs = [float(a) for a in re.findall(r"val loss \S+ acc (\S+)", log)]
    assert len(accs) == 2
    assert s1["best_valid_acc"] == pytest.approx(accs[0], abs=0.006)      # log rounds to 0.01
    assert s2["best_valid_acc"] == pytest.approx(max(accs), abs=0.006)
    improved = s2["best_valid_acc"] > s1["best_valid_acc"]
    assert s1["counter"] == 0 and s2["counter"] == (0 if improved else 1)
    best = load_ckpt(ck / f"{NAME}_model_best.pdparams")
    assert best["epoch"] == (2 if improved else 1)
    assert best["best_valid_acc"] == s2["best_valid_acc"]
    # --lr_patience 0 --lr_factor 0.5: the lr halves exactly when epoch 2 did not improve
    assert sched["last_lr"] == pytest.approx(INIT_LR if improved else INIT_LR * 0.5)


# ------------------------------------------------------------------ resume
def test_the_keys_a_run_is_resumed_by_are_flags():
    """The keys resuming and testing read from a checkpoint's config are real flags (no typo
    hides one); clutter is settled from the canvas."""
    config = vars(get_config([])[0])
    assert all(k in config for k in MODE_KEYS + SPLIT_KEYS + ARCH_KEYS)


def test_resume_continues_at_the_next_epoch(tiny_run, tiny_data, ckpt_copy, tmp_path):
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--ckpt",
                              ckpt_copy / f"{NAME}_ckpt1.pdparams", "--epochs", "3"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = log_of(tmp_path / "logs")
    assert "epochs 2..3" in log
    assert "--epochs 3 (the run had 2)" in log
    assert [(e, n) for e, n, _ in epoch_lines(log)] == [(2, 3), (3, 3)], log
    s1 = load_ckpt(tiny_run.ckpt_dir / f"{NAME}_ckpt1.pdparams")
    s3 = load_ckpt(ckpt_copy / f"{NAME}_ckpt3.pdparams")
    assert s3["epoch"] == 3
    # The scheduler continued from ckpt1's state (two more steps) ...
    assert s3["optim_state"]["LR_Scheduler"]["last_epoch"] == 3
    # ... and so did Adam: 2 * 17 more steps on top of ckpt1's, not a fresh optimizer.
    assert beta1_pow(s3) / beta1_pow(s1) == pytest.approx(BETA1 ** (2 * BATCHES_PER_EPOCH),
                                                          rel=1e-4)


def test_resume_uses_the_scheduler_state_of_the_checkpoint(tiny_run, tiny_data, ckpt_copy,
                                                           tmp_path):
    """The first run used --lr_patience 0 --lr_factor 0.5: ckpt2 carries its own last_lr."""
    last_lr = float(load_ckpt(ckpt_copy / f"{NAME}_ckpt2.pdparams")["optim_state"]["LR_Scheduler"]
                    ["last_lr"])
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "3"),
                   cwd=tmp_path)      # the latest: ckpt2
    assert res.returncode == 0, res.stdout + res.stderr
    epochs = epoch_lines(log_of(tmp_path / "logs"))
    assert [e for e, _, _ in epochs] == [3]
    assert epochs[0][2] == pytest.approx(last_lr, rel=1e-3)


def forge_checkpoint(path, last_lr=1.25e-4, counter=3, best_valid_acc=100.0):
    """Rewrite a checkpoint with a distinctive scheduler state, counter and best accuracy."""
    state = load_ckpt(path)
    state["optim_state"]["LR_Scheduler"]["last_lr"] = last_lr
    state["optim_state"]["LR_Scheduler"]["num_bad_epochs"] = 0
    state["counter"] = counter
    state["best_valid_acc"] = best_valid_acc
    paddle.save(state, str(path))


def test_resume_restores_lr_counter_and_best_accuracy(tiny_data, ckpt_copy, tmp_path):
    forge_checkpoint(ckpt_copy / f"{NAME}_ckpt2.pdparams")
    best_before = (ckpt_copy / f"{NAME}_model_best.pdparams").read_bytes()
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "6",
                              "--train_patience", "3"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = log_of(tmp_path / "logs")
    epochs = epoch_lines(log)
    # lr from the checkpoint's scheduler, not --init_lr
    assert [e for e, _, _ in epochs] == [3] and epochs[0][2] == pytest.approx(1.25e-4)
    assert "lr 1.250e-04" in log
    # counter 3 -> 4 > train_patience 3: early stop after one epoch, no new best (100%)
    assert "[!] No better validation accuracy for 4 epochs (--train_patience 3)" in log
    s3 = load_ckpt(ckpt_copy / f"{NAME}_ckpt3.pdparams")
    assert s3["counter"] == 4 and s3["best_valid_acc"] == 100.0 and s3["epoch"] == 3
    assert (ckpt_copy / f"{NAME}_model_best.pdparams").read_bytes() == best_before
    # Resumed again, the run says it has finished, and how to go on.
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "6"),
                   cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "stopped early at epoch 3" in res.stderr and "--train_patience" in res.stderr
    assert "epoch 4/" not in log_of(tmp_path / "logs")


def test_init_lr_given_on_resume_restarts_the_schedule(tiny_data, ckpt_copy, tmp_path):
    forge_checkpoint(ckpt_copy / f"{NAME}_ckpt2.pdparams")
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "3",
                              "--init_lr", "3e-4"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    log = log_of(tmp_path / "logs")
    epochs = epoch_lines(log)
    assert [e for e, _, _ in epochs] == [3] and epochs[0][2] == pytest.approx(3e-4)
    assert f"--init_lr 0.0003 (the run had {INIT_LR:g})" in log


def test_eval_std_is_saved_and_kept_apart_from_the_training_std(tiny_data, ckpt_copy, tmp_path):
    """Training explores at --std; a checkpoint records the eval std that testing with M = 1
    samples at, and M > 1 samples at the policy's own std."""
    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "3",
                              "--lr_patience", "5"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    log = log_of(tmp_path / "logs")
    assert "--lr_patience 5 (the run had 0)" in log  # flags that differ are named
    s3_path = ckpt_copy / f"{NAME}_ckpt3.pdparams"
    s3 = load_ckpt(s3_path)
    assert s3["std"] == 0.1 and s3["config"]["std"] == 0.1
    assert s3["eval_std"] == EVAL_STD and s3["config"]["eval_std"] == EVAL_STD
    # Every loader of a checkpoint (test mode, plot_glimpses, benchmarks) samples with it.
    assert load_model(str(s3_path))[1].eval_std == EVAL_STD
    res = run_test_mode(tiny_data, tmp_path / "test", "--ckpt", s3_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"(M=1, std {EVAL_STD:g})" in res.stdout
    res = run_test_mode(tiny_data, tmp_path / "test", "--ckpt", s3_path, "--eval_std", "0.07")
    assert "(M=1, std 0.07)" in res.stdout  # the flag overrides the file's
    res = run_test_mode(tiny_data, tmp_path / "test", "--ckpt", s3_path, "--M", "3")
    assert "(M=3, std 0.1)" in res.stdout  # M > 1 averages over the policy as trained
    # A file without an eval std (the reference's format) tests at its own std.
    del s3["eval_std"]
    s3["std"] = 0.025
    paddle.save(s3, str(s3_path))
    assert load_model(str(s3_path))[1].eval_std == 0.025
    res = run_test_mode(tiny_data, tmp_path / "test", "--ckpt", s3_path)
    assert "(M=1, std 0.025)" in res.stdout


# ------------------------------------------------------------------ test mode
def run_test_mode(tiny_data, tmp_path, *extra, seed=1):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return run_main(["--is_train=False", "--data_dir", tiny_data, "--logs_dir", tmp_path / "logs",
                     "--random_seed", seed, *extra], cwd=tmp_path)


def test_test_mode_prints_one_accuracy_line(tiny_run, tiny_data, tmp_path):
    res = run_test_mode(tiny_data, tmp_path, "--ckpt_dir", tiny_run.ckpt_dir, "--num_glimpses", "2",
                        "--best", "False")                       # the latest epoch: ckpt2
    assert res.returncode == 0, res.stdout + res.stderr
    lines = acc_lines(res.stdout)
    assert len(lines) == 1 and res.stdout.count("Test Acc") == 1, res.stdout
    correct, n, acc, err = lines[0]
    assert n == 300 and 0 <= correct <= 300
    assert acc == pytest.approx(100 * correct / 300, abs=0.006)
    assert err == pytest.approx(100 - acc, abs=0.011)
    assert acc_lines((tmp_path / "logs" / f"{NAME}_test.log").read_text()) == lines
    assert not (tmp_path / "logs" / f"{NAME}.log").exists()      # training logs stay apart
    assert not epoch_lines(res.stdout)                           # no training happened


def test_ckpt_flag_adopts_the_stored_architecture(tiny_run, tiny_data, tmp_path):
    ckpt = tiny_run.ckpt_dir / f"{NAME}_ckpt2.pdparams"
    adopted = run_test_mode(tiny_data, tmp_path / "a", "--ckpt", ckpt, "--hidden_size", "64")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr   # flags say 6 glimpses, 64
    assert (tmp_path / "a" / "logs" / f"{NAME}_test.log").is_file()   # named after the checkpoint
    explicit = run_test_mode(tiny_data, tmp_path / "b", "--ckpt_dir", tiny_run.ckpt_dir,
                             "--num_glimpses", "2", "--best", "False")
    assert explicit.returncode == 0, explicit.stdout + explicit.stderr
    a, b = acc_lines(adopted.stdout), acc_lines(explicit.stdout)
    assert len(a) == 1 and a == b and a[0][1] == 300


# ------------------------------------------------------------------ Ctrl-C
def wait_for(predicate, proc, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_interrupt_leaves_a_resumable_checkpoint(tiny_data, tmp_path, sig):
    """Ctrl-C, or a kill from a job scheduler, ends the run with a checkpoint to resume."""
    ckpt_dir, logs = tmp_path / "ckpt", tmp_path / "logs"
    args = train_args(tiny_data, tmp_path, "--epochs", "200", "--save_freq", "50",
                      "--plot_freq", "0")
    log_file = logs / f"{NAME}.log"
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        # A shell's background jobs inherit an ignored SIGINT; a user's terminal does not.
        proc = subprocess.Popen([sys.executable, str(MAIN), *map(str, args)], cwd=tmp_path,
                                env=cli_env(), stdout=out, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            seen = wait_for(lambda: log_file.is_file() and "epoch 1/200" in log_file.read_text(),
                            proc, timeout=120)
            assert seen and proc.poll() is None, (tmp_path / "err.txt").read_text()[-3000:]
            proc.send_signal(sig)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert rc == 128 + sig, stdout[-2000:] + stderr[-3000:]  # 130 for Ctrl-C, 143 for SIGTERM
    assert "Traceback" not in stderr
    log = log_file.read_text()
    assert "[!] Interrupted" in log and "[!] Interrupted" in stdout
    done = [e for e, _, _ in epoch_lines(log)]
    n = done[-1]
    assert done == list(range(1, n + 1)) and n < 200
    interrupted = ckpt_dir / f"{NAME}_interrupted.pdparams"
    printed = re.search(r"resume with: (python main\.py .*)$", log, re.M).group(1)
    assert printed == f"python main.py --resume=True --ckpt {interrupted}"
    state = load_ckpt(interrupted)
    assert state["epoch"] == n and state["config"]["epochs"] == 200
    assert not list(ckpt_dir.glob(f"{NAME}_ckpt*.pdparams"))  # no clean file was overwritten

    # The printed line, run from another folder, continues the run in its own folders with
    # its own data; a flag given beside it (a shorter run here) is named.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_main([*printed.split()[2:], "--epochs", n + 1], cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    log = log_file.read_text()
    assert f"[*] Resuming with --epochs {n + 1} (the run had 200)" in log  # nothing else differs
    assert epoch_lines(log)[-1][:2] == (n + 1, n + 1) and f"epochs {n + 1}..{n + 1}" in log
    assert load_ckpt(ckpt_dir / f"{NAME}_ckpt{n + 1}.pdparams")["epoch"] == n + 1
    assert not list(elsewhere.iterdir())


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_data, tmp_path):
    """2 epochs straight == 1 epoch, then --resume for the second: same weights, same log."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--plot_freq", "0", "--save_freq", "1"]
    for d, epochs in ((straight, 2), (split, 1)):
        res = run_main(train_args(tiny_data, d, "--epochs", epochs, *common), cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
    res = run_main(train_args(tiny_data, split, "--epochs", 2, "--resume=True",
                              *common), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    a = load_ckpt(straight / "ckpt" / f"{NAME}_ckpt2.pdparams")["model_state"]
    b = load_ckpt(split / "ckpt" / f"{NAME}_ckpt2.pdparams")["model_state"]
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    line, again = (log_line(log_of(d / "logs"), "epoch 2/2") for d in (straight, split))
    assert line.split("|")[:4] == again.split("|")[:4]  # lr, train and val metrics
    assert "--epochs 2 (the run had 1)" in (split / "logs" / f"{NAME}.log").read_text()


# ------------------------------------------------------------------ evaluation draws
def test_evaluation_draws_belong_to_the_images(tiny_data, tmp_path):
    """evaluate(seed=s) draws keyed on each image: the same counts at any batch size (the
    two-process case: tests/test_distributed.py), different draws for another seed, and none
    of it from the training run's generator."""
    from data_loader import get_test_loader
    from trainer import Trainer
    from utils import set_seed
    config, _ = get_config([str(a) for a in train_args(tiny_data, tmp_path)])
    trainer = Trainer(config, "cpu")
    loader = get_test_loader(str(tiny_data), 64)
    set_seed(5)
    first = trainer.evaluate(loader, seed=11)
    after = paddle.randn([4]).numpy()
    set_seed(5)
    np.testing.assert_array_equal(after, paddle.randn([4]).numpy())  # training stream intact
    losses = {float(trainer.evaluate(loader, std=0.1, seed=s).loss) for s in (11, 12, 13)}
    assert len(losses) == 3, losses
    for batch_size in (7, 300):
        other = get_test_loader(str(tiny_data), batch_size)
        for M in (1, 3):
            a, b = trainer.evaluate(loader, M, seed=11), trainer.evaluate(other, M, seed=11)
            assert a.correct == b.correct and a.loss == pytest.approx(b.loss, rel=1e-5), (M, a, b)
    assert first.correct == trainer.evaluate(loader, seed=11).correct


def test_keep_ckpts_keeps_the_latest_epoch_checkpoints(tiny_data, tmp_path):
    res = run_main(train_args(tiny_data, tmp_path, "--epochs", "4",
                              "--keep_ckpts", "2", "--plot_freq", "0"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    kept = sorted(p.name for p in (tmp_path / "ckpt").glob("*.pdparams"))
    assert kept == [f"{NAME}_ckpt3.pdparams", f"{NAME}_ckpt4.pdparams",
                    f"{NAME}_model_best.pdparams"]


def test_resume_by_folder_finds_the_run_without_its_flags(tiny_run, tiny_data, ckpt_copy, tmp_path):
    """--resume=True --ckpt_dir DIR alone: the folder's one model, with its architecture."""
    res = run_main(["--resume=True", "--ckpt_dir", ckpt_copy, "--epochs", "3", "--data_dir",
                    tiny_data, "--logs_dir", tmp_path / "logs"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "epochs 3..3" in log_of(tmp_path / "logs")       # ram_2_8x8_1, 2 glimpses
