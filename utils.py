"""Small shared helpers: errors, names, output folders, seeding, devices, threads, logging."""
import contextlib
import functools
import logging
import os
import random
import sys
import warnings

import numpy as np

# Paddle warns on import about a missing C++ build cache; it concerns custom operators, which
# RAM does not build. Every entry point imports this module before Paddle.
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle 3 flags calls whose signature differs from PyTorch's namesake (paddle.chunk, x.max());
# the code here uses Paddle's own semantics on purpose.
warnings.filterwarnings("ignore", message=r"\s*Non compatible API")


class RamError(Exception):
    """A user-facing problem (bad data, checkpoint or config). Commands print it as one line
    (one_line_errors)."""


def one_line_errors(*kinds):
    """Decorate a command's main(): an exception of `kinds` (default: RamError) becomes the
    one line `error: <message>` on stderr and the return value 2, never a traceback."""
    kinds = kinds or (RamError,)

    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except kinds as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        return run
    return wrap


# Config fields that define the network (and its input); a checkpoint stores them so that it
# describes itself, and they must agree with the flags unless the checkpoint is adopted.
ARCH_KEYS = ("patch_size", "glimpse_scale", "num_patches", "loc_hidden", "glimpse_hidden",
             "num_glimpses", "hidden_size", "std", "dataset", "canvas", "clutter", "core",
             "first_fixation")
# The shipped models, their logs and plots: read-only to every run.
ROOT = os.path.dirname(os.path.abspath(__file__))
PRETRAINED = tuple(os.path.join(ROOT, d, "pretrained") for d in ("ckpt", "logs", "plots"))


def check_not_pretrained(path, flag):
    """Refuse to write into a folder of shipped files (or below one)."""
    real = os.path.realpath(path)
    for shipped in PRETRAINED:
        if real == os.path.realpath(shipped) or real.startswith(os.path.realpath(shipped) + os.sep):
            raise RamError(f"{flag} {path} holds the shipped pretrained files, which runs never "
                           f"write; pass another {flag} (e.g. the default ./{os.path.basename(os.path.dirname(shipped))})")


def ensure_dir(path, flag):
    """Create folder `path` if needed and check that files can be written in it: one RamError
    naming the path and the problem otherwise (a file in the way, read-only, disk full)."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise RamError(f"{flag} {path} is a file, not a folder; remove it or pass another "
                       f"{flag}") from None
    except OSError as e:
        raise RamError(f"cannot create {flag} {path}: {e.strerror}; pass another {flag}") from None
    if not os.path.isdir(path):
        raise RamError(f"{flag} {path} is a file, not a folder; remove it or pass another {flag}")
    probe = os.path.join(path, f".write_test.tmp{os.getpid()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RamError(f"cannot write in {flag} {path}: {e.strerror}; free space, fix its "
                       f"permissions or pass another {flag}") from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
    return path


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def model_name(config):
    """ram_{glimpses}_{g}x{g}_{scales}[_{dataset}{canvas}]: the one name behind ckpt/, logs/
    and plots/ files, e.g. ram_6_8x8_1 (MNIST) or ram_6_12x12_3_cluttered60."""
    name = "ram_{}_{}x{}_{}".format(config.num_glimpses, config.patch_size, config.patch_size,
                                    config.num_patches)
    dataset = getattr(config, "dataset", "mnist")
    return name if dataset == "mnist" else f"{name}_{dataset}{config.canvas}"


def check_batch_split(batch_size, world):
    """--batch_size is the global batch: it must split evenly over `world` processes."""
    if batch_size % world:
        fits = max(world, batch_size // world * world)
        raise RamError(f"--batch_size {batch_size} is the global batch and must be divisible by "
                       f"the {world} processes; use e.g. --batch_size {fits}")


def set_seed(seed):
    """Seed every generator the program uses (Python, NumPy, Paddle): randomness lives here."""
    import paddle
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def cpu_info():
    """(vendor, set of feature flags) from /proc/cpuinfo; ("", empty set) where there is none."""
    vendor, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    vendor = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


_AVX512_SKX = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def mkl_cpu_type(vendor, flags):
    """The MKL_DEBUG_CPU_TYPE that gives an AMD CPU MKL's kernels for its widest vectors.

    Paddle ships MKL 2019, which takes a slow generic path on non-Intel CPUs unless told
    otherwise: 9 is its AVX-512 + VNNI path (Cascade Lake), 7 plain AVX-512 (Skylake-X), 5
    AVX2. On a Zen 5 (AVX-512) machine 9 ran the model's GEMMs 1.6-2.0x as fast as 5
    (`logs/benchmark_train_speed.log`). A path needs every
    instruction set it uses (8, Knights Mill's, dies with an illegal instruction here), hence
    the flag checks. None (leave MKL alone) on Intel CPUs, which MKL recognises itself.
    """
    if "AMD" not in vendor:
        return None
    if _AVX512_SKX | {"avx512_vnni"} <= flags:
        return "9"
    if _AVX512_SKX <= flags:
        return "7"
    if {"avx2", "fma"} <= flags:
        return "5"
    return None


def tune_cpu_env(threads=None):
    """Set the math-library environment; must run before Paddle (and so MKL) is imported.

    MKL_DEBUG_CPU_TYPE: see mkl_cpu_type. OpenMP stays at one thread: its fork/join costs
    more than it gains on RAM's many tiny element-wise ops. MKL gets `threads` (default:
    every core, shared out among the processes that paddle.distributed.launch starts on
    this machine). Values the user exported win.
    """
    cpu_type = mkl_cpu_type(*cpu_info())
    if cpu_type:
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", cpu_type)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    local_procs = max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1))
    threads = threads or max(1, (os.cpu_count() or 1) // local_procs)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    return int(os.environ["MKL_NUM_THREADS"])


def select_device(use_gpu=True):
    """Set and return Paddle's device: 'gpu' when asked for (--use_gpu), compiled with CUDA
    and a GPU is present, else 'cpu'."""
    import paddle
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    use = "gpu" if use_gpu and has_gpu else "cpu"
    paddle.set_device(use)
    return use


def init_distributed():
    """(rank, world size) of this process, joining the process group when launched by
    paddle.distributed.launch (which sets PADDLE_TRAINERS_NUM); (0, 1) otherwise."""
    import paddle.distributed as dist
    world = dist.get_world_size()
    if world > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), world


def get_logger(name, log_file=None, console=True):
    """A logger printing plain lines to stdout (unless console=False) and, if given,
    appending them to log_file; with neither it drops everything below WARNING."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handlers = [logging.StreamHandler(sys.stdout)] if console else []
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
    return logger
