"""Checkpoint files: where they go, how they are written and read, and what they describe.

A checkpoint is a dict written by paddle.save:

    epoch, model_state, optim_state, best_valid_acc   the reference's four keys
    counter, elapsed, config, rng_state, std, eval_std, position (interrupted epochs)

The reference's published file has the first four only; it loads with REFERENCE_ARCH. Files
are written atomically (a temporary beside the target, then a rename), one training run
holds a folder's lock, and a run keeps its best checkpoint, its interrupted one and its last
`keep` epoch checkpoints.
"""
import contextlib
import glob
import os
import re
import zipfile

import numpy as np

from utils import RamError

# The reference implementation's published checkpoint stores weights alone; it was trained
# with these (its README and config.py), so a file without a config is read with them.
REFERENCE_ARCH = {"patch_size": 8, "glimpse_scale": 1, "num_patches": 1, "loc_hidden": 128,
                  "glimpse_hidden": 128, "num_glimpses": 6, "hidden_size": 256, "std": 0.05,
                  "dataset": "mnist", "canvas": 28, "clutter": 0, "core": "rnn",
                  "first_fixation": "random"}


# ---------------------------------------------------------------- where
def path(ckpt_dir, name, best=False, epoch=None):
    """<ckpt_dir>/<name>_model_best.pdparams, or _ckpt<epoch>, or (neither) _interrupted."""
    stem = os.path.join(ckpt_dir, name)
    if best:
        return f"{stem}_model_best.pdparams"
    return f"{stem}_ckpt{epoch}.pdparams" if epoch is not None else f"{stem}_interrupted.pdparams"


def epochs_saved(ckpt_dir, name):
    """The epochs of <name>'s epoch checkpoints in ckpt_dir, ascending."""
    found = (re.search(r"_ckpt(\d+)\.pdparams$", p)
             for p in glob.glob(os.path.join(ckpt_dir, glob.escape(name) + "_ckpt*.pdparams")))
    return sorted(int(m.group(1)) for m in found if m)


def models_in(ckpt_dir):
    """The model names that have checkpoints in ckpt_dir."""
    names = (re.match(r"(.+?)_(?:model_best|ckpt\d+|interrupted)\.pdparams$", os.path.basename(p))
             for p in glob.glob(os.path.join(ckpt_dir, "*.pdparams")))
    return sorted({m.group(1) for m in names if m})


def to_resume(ckpt_dir, name, best=False):
    """The file a run resumes from: its best checkpoint with best=True, else the newest of
    its interrupted one and its latest epoch checkpoint. None if it has none."""
    if best:
        best_path = path(ckpt_dir, name, best=True)
        return best_path if os.path.isfile(best_path) else None
    candidates = [path(ckpt_dir, name, epoch=e) for e in epochs_saved(ckpt_dir, name)[-1:]]
    candidates += [p for p in [path(ckpt_dir, name)] if os.path.isfile(p)]
    return max(candidates, key=os.path.getmtime, default=None)


def find(ckpt_dir, name, best, any_model=False):
    """The checkpoint of run <name> in ckpt_dir to test or resume (to_resume), or one RamError.
    any_model: if the folder holds one model's checkpoints, that model is the run."""
    models = models_in(ckpt_dir)
    if name not in models and len(models) == 1 and any_model:
        name = models[0]
    file = to_resume(ckpt_dir, name, best)
    if file is None:
        raise RamError(f"no {'best' if best else 'latest'} checkpoint of {name} in {ckpt_dir} "
                       f"(it holds: {describe_folder(ckpt_dir)}); pass --ckpt FILE or the run's "
                       "--ckpt_dir, or train first")
    return file


def prune(ckpt_dir, name, keep):
    """Delete all but the last `keep` epoch checkpoints of <name>; returns the deleted paths.
    The best and the interrupted checkpoints are never touched."""
    epochs = epochs_saved(ckpt_dir, name)
    old = [path(ckpt_dir, name, epoch=e) for e in epochs[:max(len(epochs) - keep, 0)]]
    for p in old:
        with contextlib.suppress(OSError):
            os.remove(p)
    return old


def describe_folder(folder):
    have = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.pdparams")))
    return ", ".join(have) if have else "no .pdparams files"


# ---------------------------------------------------------------- read
def load(file):
    """Read a checkpoint dict, turning every failure into one RamError line."""
    import paddle
    if not os.path.isfile(file):
        folder = os.path.dirname(os.path.abspath(file))
        raise RamError(f"checkpoint {file} not found; {folder} holds: {describe_folder(folder)} "
                       "(train first, or pass --ckpt FILE)")
    try:
        state = paddle.load(file)
    except Exception as e:
        if is_torch_file(file):
            raise RamError(f"{file} is a PyTorch checkpoint; convert it first with python "
                           f"align.py --torch_ckpt {file} --out <file>.pdparams") from None
        raise RamError(f"cannot read checkpoint {file}: corrupt or not a Paddle file "
                       f"({type(e).__name__}); use another checkpoint") from None
    if not isinstance(state, dict) or "model_state" not in state:
        hint = (f"it looks like a PyTorch file: convert it with python align.py --torch_ckpt "
                f"{file} --out <file>.pdparams" if is_torch_file(file) else
                "use a file written by main.py or converted by align.py")
        raise RamError(f"{file} is not a RAM checkpoint (no 'model_state'); {hint}")
    bad = [k for k, v in state["model_state"].items()
           if not np.isfinite(np.asarray(v.numpy() if hasattr(v, "numpy") else v)).all()]
    if bad:
        raise RamError(f"checkpoint {file} has non-finite weights (NaN or inf in "
                       f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): it was saved "
                       "after training diverged; use an earlier checkpoint")
    return state


def is_torch_file(file):
    """PyTorch's format: a zip archive with a data.pkl, or a .pth/.pt name."""
    if file.endswith((".pth", ".pt")):
        return True
    try:
        with zipfile.ZipFile(file) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def stored_config(state):
    """The flags a checkpoint was written with (a dict); REFERENCE_ARCH for the reference's
    files, which store none."""
    return dict(state.get("config") or REFERENCE_ARCH)


def eval_std(state):
    """The policy std that testing the checkpoint with M = 1 samples at: its stored eval_std,
    else (files from before it, and the reference's) the std it was trained at."""
    std = state.get("eval_std")
    return float(state.get("std", stored_config(state).get("std", 0.1)) if std is None else std)


def load_weights(model, state, file):
    """Load state['model_state'] into model after checking every key and shape (one RamError)."""
    own, theirs = model.state_dict(), state["model_state"]
    problems = [f"missing {k}" for k in own if k not in theirs]
    problems += [f"unexpected {k}" for k in theirs if k not in own]
    problems += [f"{k} has shape {list(theirs[k].shape)}, model needs {list(v.shape)}"
                 for k, v in own.items() if k in theirs and list(theirs[k].shape) != list(v.shape)]
    if problems:
        raise RamError(f"checkpoint {file} does not fit the architecture it describes: "
                       + "; ".join(problems))
    model.set_state_dict(theirs)


def load_model(file):
    """(model in eval mode with the checkpoint's weights, its config): the config that
    tests it (config.checkpoint_config), whose eval_std is the std testing samples at."""
    from config import checkpoint_config
    from model import build_model
    state = load(file)
    config = checkpoint_config(stored_config(state), eval_std(state))
    model = build_model(config)
    load_weights(model, state, file)
    model.eval()
    return model, config


# ---------------------------------------------------------------- write
def optimizer_state(optimizer, model):
    """The optimizer's state keyed by structured parameter names (sensor.fc1.weight_moment1_0),
    so that the file does not depend on the order in which a process created its layers."""
    return _rename(optimizer.state_dict(), {p.name: k for k, p in model.state_dict().items()})


def restore_optimizer(optimizer, model, saved, keep_lr=True):
    """Load a saved optimizer_state; keep_lr=False keeps the optimizer's own (fresh) lr schedule."""
    own = optimizer.state_dict().get("LR_Scheduler")
    saved = _rename(saved, {k: p.name for k, p in model.state_dict().items()})
    if not keep_lr and own is not None:
        saved["LR_Scheduler"] = own
    optimizer.set_state_dict(saved)


def _rename(optim_state, rename):
    """Optimizer accumulators are keyed '<param name>_<accumulator>'; rename the param part."""
    out = {}
    for key, value in optim_state.items():
        for old, new in rename.items():
            if key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def save(state, file):
    """paddle.save, atomically."""
    import paddle
    atomic_write(file, lambda tmp: paddle.save(state, tmp))


def atomic_write(file, write):
    """write(temporary path) beside `file`, then rename: never a half-written file. A failure
    (disk full, read-only) removes the temporary and is one RamError."""
    tmp = f"{file}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        write(tmp)
        os.replace(tmp, file)
    except OSError as e:
        raise RamError(f"cannot write {file}: {e.strerror or e}; free space or pass another "
                       "folder (the previous file, if any, is intact)") from None
    finally:  # interrupted or failed mid-write: leave the old file, and no stray temporary
        with contextlib.suppress(OSError):
            if os.path.exists(tmp):
                os.remove(tmp)


def remove_stale_temporaries(folder):
    """Delete `*.tmp<pid>` files left in folder by processes that no longer run (kill -9
    during a save); returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        m = re.search(r"\.tmp(\d+)$", name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive OS lock (flock) on `<folder>/.ram.lock` holding this process's PID: one
    training run per checkpoint folder. The kernel drops the lock when the process ends,
    however it ends, so a file left by kill -9 locks nothing."""

    def __init__(self, folder):
        import fcntl
        self.path = os.path.join(folder, ".ram.lock")
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RamError(f"another training run (PID {holder}) is writing to {folder}; wait "
                           "for it to end or pass another --ckpt_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self):
        if not self.file.closed:
            self.file.close()  # closing drops the flock

