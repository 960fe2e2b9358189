"""Data-parallel training: 2 CPU processes under paddle.distributed.launch (gloo backend).

The launches are real (each costs a few seconds of start-up), the sharding and the batch-size
rule are checked in-process.
"""
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from conftest import (MAIN, ROOT, acc_lines, beta1_pow, cli_env, epoch_lines, run_main,
                      train_args)

pytestmark = pytest.mark.slow  # several processes under paddle.distributed.launch

NAME = "ram_2_8x8_1"
WORLD = 2
STEPS_PER_EPOCH = 17              # ceil(540 / 32) global batches, whatever the # of processes
BETA1 = 0.9


def start_launch(script, args, cwd, **env):
    """Start `python -m paddle.distributed.launch --nproc_per_node 2 script args` in cwd.
    Rank 0's output reaches the launcher's stdout (a pipe); every rank's output is in
    <cwd>/launch_log/workerlog.<rank>."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD),
           "--log_dir", str(cwd / "launch_log"), str(script), *map(str, args)]
    return subprocess.Popen(cmd, cwd=str(cwd), env=cli_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout):
    """The launcher's output once it exits; past `timeout` seconds it is stopped, and fails."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        # The workers live in sessions of their own: only the launcher's SIGTERM handler
        # reaches them, a SIGKILL would leave them running.
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        pytest.fail(f"distributed launch timed out after {timeout}s:\n{out[-3000:]}")


def launch(script, args, cwd, timeout=150, **env):
    """Run a 2-process launch to its end: (returncode, launcher's output, worker log folder)."""
    proc = start_launch(script, args, cwd, **env)
    out = finish(proc, timeout)
    return proc.returncode, out, cwd / "launch_log"


def worker_log(log_dir, rank):
    path = log_dir / f"workerlog.{rank}"
    return path.read_text() if path.is_file() else ""


# ------------------------------------------------------------------ one step: 2 ranks == 1 rank
B, T, STEPS, N_EVAL, EVAL_BATCH = 16, 2, 2, 37, 8
# One thread everywhere: MKL's summation order then depends on nothing but the data.
ONE_THREAD = {"MKL_NUM_THREADS": 1, "OMP_NUM_THREADS": 1, "MKL_DYNAMIC": "FALSE"}


def fixed_data():
    """A global batch (x [B, 1, 28, 28], y [B], l_0 [B, 2], noise [T, B, 2]) and an
    evaluation set (x [N_EVAL, 28, 28] uint8, y [N_EVAL]), the same in every process."""
    rng = np.random.RandomState(7)
    batch = (rng.randn(B, 1, 28, 28).astype(np.float32), rng.randint(0, 10, B).astype(np.int64),
             rng.uniform(-1, 1, (B, 2)).astype(np.float32),
             rng.randn(T, B, 2).astype(np.float32))
    evalset = (rng.randint(0, 256, (N_EVAL, 28, 28)).astype(np.uint8),
               rng.randint(0, 10, N_EVAL).astype(np.int64))
    return batch, evalset


def run_steps(out_dir):
    """Build a Trainer (distributed when launched so), take STEPS steps on this rank's part
    of the fixed global batch with the global batch's own l_0 and noise, then evaluate on a
    sharded set with random fixations (seeded per image); save params, grads, metrics."""
    from config import get_config
    from data_loader import TensorLoader
    from trainer import Trainer
    from utils import set_seed

    config, _ = get_config([str(a) for a in (
        "--num_glimpses", T, "--batch_size", B, "--logs_dir", out_dir / "logs",
        "--ckpt_dir", out_dir / "ckpt", "--plot_dir", out_dir / "plots")])
    paddle.set_device("cpu")
    set_seed(config.random_seed)
    trainer = Trainer(config, "cpu")
    rank, world = trainer.rank, trainer.world
    (x, y, l_0, noise), (images, labels) = fixed_data()
    part = slice(rank * B // world, (rank + 1) * B // world)
    trainer.model.train()
    for _ in range(STEPS):
        trainer.train_step(paddle.to_tensor(x[part]), paddle.to_tensor(y[part]),
                           paddle.to_tensor(l_0[part]), paddle.to_tensor(noise[:, part]))

    loader = TensorLoader(images, labels, EVAL_BATCH).shard(rank, world, pad=False)
    loss, acc, correct, _ = trainer.evaluate(loader, M=2, seed=3)
    arrays = {f"param/{k}": v.numpy() for k, v in trainer.model.state_dict().items()}
    arrays.update({f"grad/{k}": v.grad.numpy() for k, v in trainer.model.state_dict().items()})
    np.savez(out_dir / f"rank{rank}_of{world}.npz", eval=np.array([loss, acc, correct]),
             local_eval=np.array([loader.local_samples]), **arrays)


STEP_SCRIPT = f"""
import sys
from pathlib import Path
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
from test_distributed import run_steps

run_steps(Path(sys.argv[1]))
"""


def test_two_processes_step_like_one_process_over_the_global_batch(tmp_path):
    script = tmp_path / "steps.py"
    script.write_text(STEP_SCRIPT)
    rc, out, log_dir = launch(script, [tmp_path], tmp_path, timeout=120, **ONE_THREAD)
    assert rc == 0, out[-3000:] + worker_log(log_dir, 1)[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=str(tmp_path),
                            env=cli_env(**ONE_THREAD), capture_output=True, text=True,
                            timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]   # world 1: the whole batch
    one = np.load(tmp_path / "rank0_of1.npz")
    ranks = [np.load(tmp_path / f"rank{r}_of{WORLD}.npz") for r in range(WORLD)]
    keys = [k for k in one.files if k.startswith(("param/", "grad/"))]
    assert len(keys) == 2 * 20 and set(keys) == {k for k in ranks[0].files if "/" in k}
    for r, got in enumerate(ranks):
        for k in keys:
            # Adam's first steps are nearly sign(g) * lr, blind to a gradient's scale: the
            # gradients themselves show that the ranks average rather than sum.
            np.testing.assert_allclose(got[k], one[k], rtol=1e-4, atol=1e-6,
                                       err_msg=f"rank {r}: {k}")
    # Every sample evaluated exactly once over the ranks (37 = 19 + 18, uneven last batch),
    # sums reduced, each image its own draws: the same loss, accuracy and count as one process.
    assert [int(g["local_eval"][0]) for g in ranks] == [19, 18]
    for got in ranks:
        np.testing.assert_allclose(got["eval"][:2], one["eval"][:2], rtol=1e-5)
        assert got["eval"][2] == one["eval"][2]


# ------------------------------------------------------------------ sharding (in-process)
def shards(n, batch_size, world, pad, shuffle=True, epoch=3):
    """Every rank's batches of one epoch, as lists of sample indices."""
    from data_loader import TensorLoader
    out = []
    for rank in range(world):
        loader = TensorLoader(np.zeros((n, 2, 2), np.uint8), np.arange(n), batch_size, shuffle,
                              seed=5).shard(rank, world, pad)
        loader.set_epoch(epoch)
        batches = [y.numpy().tolist() for _, y in loader]
        assert len(batches) == len(loader) and sum(map(len, batches)) == loader.local_samples
        assert loader.num_samples == n
        out.append(batches)
    return out


def one_process_batches(n, batch_size, shuffle=True, epoch=3):
    return shards(n, batch_size, 1, False, shuffle, epoch)[0]


@pytest.mark.parametrize("n,batch_size,world", [(100, 32, 2), (101, 33, 3), (64, 32, 2)])
def test_training_shards_split_each_global_batch_evenly(n, batch_size, world):
    ranks = shards(n, batch_size, world, pad=True)
    full = one_process_batches(n, batch_size)
    assert all(len(r) == len(full) for r in ranks)          # same # steps on every rank
    for step, batch in enumerate(full):
        parts = [r[step] for r in ranks]
        assert len({len(p) for p in parts}) == 1              # equal parts: mean of means
        joined = sum(parts, [])
        assert joined[:len(batch)] == batch                   # the 1-process batch, in order
        assert len(joined) - len(batch) < world               # padding only to divide evenly
        assert set(joined[len(batch):]) <= set(sum(full, []))


@pytest.mark.parametrize("n,batch_size,world", [(60, 32, 2), (37, 8, 2), (5, 4, 3), (2, 4, 3)])
def test_evaluation_shards_cover_every_sample_once(n, batch_size, world):
    ranks = shards(n, batch_size, world, pad=False, shuffle=False)
    seen = sorted(i for r in ranks for b in r for i in b)
    assert seen == list(range(n))


def test_epochs_differ_and_repeat():
    a, b = shards(100, 32, 2, True, epoch=1), shards(100, 32, 2, True, epoch=2)
    assert a != b and a == shards(100, 32, 2, True, epoch=1)


def test_global_batch_must_split_evenly():
    from data_loader import TensorLoader
    from utils import RamError, check_batch_split
    check_batch_split(32, 2)
    with pytest.raises(RamError, match=r"--batch_size 33 is the global batch .* 2 processes; "
                                       r"use e.g. --batch_size 32"):
        check_batch_split(33, 2)
    loader = TensorLoader(np.zeros((10, 2, 2), np.uint8), np.arange(10), 5)
    with pytest.raises(RamError):
        loader.shard(0, 2, pad=True)
    loader.shard(1, 2, pad=False)                            # evaluation: any batch size


# ------------------------------------------------------------------ main.py end to end
def test_two_process_run_checkpoints_once_resumes_in_one_process_and_tests(tiny_data, tmp_path):
    """Train 1 epoch on 2 ranks, resume for epoch 2 in one process, test on 2 ranks."""
    from model import build_model
    rc, out, log_dir = launch(MAIN, train_args(tiny_data, tmp_path, "--epochs", "1"), tmp_path)
    assert rc == 0, out[-3000:] + worker_log(log_dir, 1)[-3000:]
    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir() if p.name != ".ram.lock") == [
        f"{NAME}_ckpt1.pdparams", f"{NAME}_model_best.pdparams", f"{NAME}_params.json"]
    log = (tmp_path / "logs" / f"{NAME}.log").read_text()
    # One line per event: a second writer would have appended its own copy.
    assert [(e, n) for e, n, _ in epoch_lines(log)] == [(1, 1)], log
    assert log.count("train on 540, validate on 60 images") == 1
    assert "[*] Data parallel: 2 processes, 16 images each per global batch of 32" in log
    assert "epoch 1/1" in out
    rank1 = worker_log(log_dir, 1)
    assert "epoch 1/1" not in rank1 and "[*]" not in rank1, rank1
    state = paddle.load(str(ckpt / f"{NAME}_ckpt1.pdparams"))
    config = state["config"]
    bare = build_model(SimpleNamespace(**config)).state_dict()
    assert list(state["model_state"]) == list(bare)           # no DataParallel prefix
    assert state["epoch"] == 1 and config["batch_size"] == 32
    # Global batches: as many optimizer steps per epoch as a one-process run takes (Adam's
    # accumulator starts at beta1 and is multiplied by it once per step).
    assert beta1_pow(state) == pytest.approx(BETA1 ** (1 + STEPS_PER_EPOCH), rel=1e-4)

    res = run_main(train_args(tiny_data, tmp_path, "--resume=True", "--epochs", "2"),
                   cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = (tmp_path / "logs" / f"{NAME}.log").read_text()
    assert "epochs 2..2" in log
    assert [(e, n) for e, n, _ in epoch_lines(log)] == [(1, 1), (2, 2)], log
    s2 = paddle.load(str(ckpt / f"{NAME}_ckpt2.pdparams"))
    assert s2["epoch"] == 2
    assert beta1_pow(s2) / beta1_pow(state) == pytest.approx(BETA1 ** STEPS_PER_EPOCH, rel=1e-4)

    rc, out, log_dir = launch(MAIN, ["--is_train=False", "--data_dir", tiny_data, "--ckpt_dir",
                                     ckpt, "--num_glimpses", "2", "--best", "False",
                                     "--logs_dir", tmp_path / "test_logs"], tmp_path)
    assert rc == 0, out[-3000:] + worker_log(log_dir, 1)[-3000:]
    lines = acc_lines(out)
    assert len(lines) == 1 and lines[0][1] == 300, out[-3000:]        # all 300, reported once
    assert acc_lines((tmp_path / "test_logs" / f"{NAME}_test.log").read_text()) == lines
    assert not acc_lines(worker_log(log_dir, 1))


def test_ctrl_c_of_the_launcher_saves_from_rank_0(tiny_data, tmp_path):
    """The launcher passes Ctrl-C (SIGINT) on to its workers as SIGTERM."""
    args = train_args(tiny_data, tmp_path, "--epochs", "200", "--train_patience", "1000",
                      "--save_freq", "100", "--plot_freq", "0")
    log_file = tmp_path / "logs" / f"{NAME}.log"
    proc = start_launch(MAIN, args, tmp_path)
    def trained_an_epoch():
        return log_file.is_file() and "epoch 1/200" in log_file.read_text()
    end = time.time() + 90
    while proc.poll() is None and time.time() < end and not trained_an_epoch():
        time.sleep(0.1)
    if proc.poll() is not None or not trained_an_epoch():
        proc.send_signal(signal.SIGTERM)
        pytest.fail("no epoch within 90 s:\n" + finish(proc, 60)[-3000:])
    proc.send_signal(signal.SIGINT)
    out = finish(proc, 60)
    log = log_file.read_text()
    # The launcher relays rank 0's output every 2 s and not after a signal: read the source.
    rank0 = worker_log(tmp_path / "launch_log", 0)
    assert log.count("[!] Interrupted") == 1 and "[!] Interrupted" in rank0, out[-3000:]
    done = [e for e, _, _ in epoch_lines(log)]
    assert done == list(range(1, len(done) + 1)) and done[-1] < 200
    ckpt = tmp_path / "ckpt"
    assert not list(ckpt.glob(f"{NAME}_ckpt*.pdparams"))    # no clean epoch file was written
    state = paddle.load(str(ckpt / f"{NAME}_interrupted.pdparams"))
    assert state["epoch"] == done[-1]
    assert "[!] Interrupted" not in worker_log(tmp_path / "launch_log", 1)
