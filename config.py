"""Command-line flags, grouped as in the reference implementation, and the config of a run.

get_config(argv) parses and checks the flags and returns a new config; checkpoints store it,
and a resumed run continues with the stored one (resumed_config), a test with the stored
architecture (checkpoint_config). A config is never changed once made: each step returns a
new one.
"""
import argparse
import os

from data_loader import DATASETS, settle_canvas
from model import FIRST_FIXATIONS
from modules import CoreNetwork
from utils import ARCH_KEYS, RamError, available_memory

# The policy std of testing with M = 1, chosen on the validation set: of 0.1 (the training
# std), 0.05, 0.03, 0.02 and 0.01, 0.02 erred least for the model trained at 0.1 (README).
EVAL_STD = 0.02


def str2bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ("true", "1", "yes", "y"):
        return True
    if v.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


parser = argparse.ArgumentParser(
    description="Recurrent Attention Model (Mnih et al., 2014) in PaddlePaddle.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    epilog="Examples: `python main.py` trains; `python main.py --resume=True` continues the "
           "run from its latest checkpoint (`--best True`: from its best); `python main.py "
           "--is_train=False` tests its best checkpoint on the MNIST test set. `python -m "
           "paddle.distributed.launch --nproc_per_node N main.py ...` trains data-parallel in "
           "N processes (GPUs, or CPU with gloo; several machines with --ips).")


def _one_line_error(message):
    """argparse's errors as one line, like every other error of main.py (exit code 2)."""
    parser.exit(2, f"error: {message} (see python main.py --help)\n")


parser.error = _one_line_error


def group(name):
    return parser.add_argument_group(name)


g = group("Glimpse Network Params")
g.add_argument("--patch_size", type=int, default=8, help="side g of the sharpest patch (pixels)")
g.add_argument("--glimpse_scale", type=int, default=1,
               help="each further patch is this many times wider than the previous one")
g.add_argument("--num_patches", type=int, default=1, help="# patches (scales) per glimpse, k")
g.add_argument("--loc_hidden", type=int, default=128, help="hidden size of the location fc, h_l")
g.add_argument("--glimpse_hidden", type=int, default=128, help="hidden size of the glimpse fc, h_g")

g = group("Core Network Params")
g.add_argument("--num_glimpses", type=int, default=6, help="# glimpses, i.e. BPTT iterations")
g.add_argument("--hidden_size", type=int, default=256, help="hidden size of the core RNN")
g.add_argument("--core", choices=CoreNetwork.KINDS, default="rnn",
               help="core network: rnn (ReLU RNN, the paper's), irnn (the same, recurrent "
                    "weights initialised to the identity), lstm")

g = group("Reinforce Params")
g.add_argument("--std", type=float, default=0.1, help="std of the Gaussian location policy")
g.add_argument("--eval_std", type=float, default=None,
               help="std of the location policy when testing with M = 1 (0: the policy's mean "
                    "itself, one deterministic trajectory): the policy's mean fixations with "
                    "less noise around them than --std's exploration err less (see "
                    "logs/README.md). Validation, and M > 1, sample at --std. Default: %g for "
                    "a new run (stored in its checkpoints); when testing or resuming, the "
                    "checkpoint's" % EVAL_STD)
g.add_argument("--M", type=int, default=1,
               help="Monte-Carlo samples per image for validation and test (log-probs averaged)")
g.add_argument("--reinforce_core", type=str2bool, default=False,
               help="let the REINFORCE gradient reach the core and glimpse networks too (the "
                    "paper's objective); False: only the location network (the reference)")
g.add_argument("--reinforce_weight", type=float, default=0.01,
               help="weight lambda of the REINFORCE term in the hybrid loss (summed over the "
                    "glimpses: lambda = w / T is a mean over them with weight w)")
g.add_argument("--first_fixation", choices=FIRST_FIXATIONS, default="random",
               help="where the first glimpse looks: uniformly random (the reference), the "
                    "image centre, or learned (the location network applied to h_0 = 0, "
                    "trained by REINFORCE like every other fixation)")
g.add_argument("--rollouts", type=int, default=1,
               help="training: each image is seen this many times per step, each copy its own "
                    "episode; from 2 on, REINFORCE's baseline for a rollout is the mean reward "
                    "of the same image's others (leave one out), less variance at this many "
                    "times the cost of a step")

g = group("Data Params")
g.add_argument("--dataset", choices=DATASETS, default="mnist",
               help="mnist: 28x28 digits; translated: a digit at a random place on a blank "
                    "canvas; cluttered: translated plus 8x8 pieces of other digits (the "
                    "paper's density: 4 up to 60x60, 8 on larger canvases)")
g.add_argument("--canvas", type=int, default=60,
               help="side of the translated/cluttered image in pixels (the paper: 60, 100)")
g.add_argument("--valid_size", type=float, default=0.1,
               help="fraction of the training set held out for validation, in [0, 1)")
g.add_argument("--batch_size", type=int, default=512,
               help="# images per optimizer step, globally: a run of N processes "
                    "(paddle.distributed.launch) gives each batch_size/N of them, so the "
                    "steps, and the lr, are those of one process")

g = group("Training Params")
g.add_argument("--is_train", type=str2bool, default=True, help="train (True) or test (False)")
g.add_argument("--epochs", type=int, default=500,
               help="total # epochs; a resumed run continues up to this number")
g.add_argument("--init_lr", type=float, default=5e-4,
               help="initial learning rate (Adam). Given when resuming, the lr restarts there "
                    "with a fresh ReduceOnPlateau schedule (fine-tuning)")
g.add_argument("--lr_patience", type=int, default=12,
               help="epochs without a better validation accuracy before the lr is reduced")
g.add_argument("--lr_factor", type=float, default=0.5,
               help="ReduceOnPlateau multiplies the lr by this")
g.add_argument("--train_patience", type=int, default=50,
               help="epochs without a better validation accuracy before training stops")
g.add_argument("--clip_grad", type=float, default=0.0,
               help="clip the gradient of all parameters to this global L2 norm (0: no clipping)")

g = group("Misc.")
g.add_argument("--use_gpu", type=str2bool, default=True,
               help="use the GPU when Paddle has CUDA and one is present (False: the CPU)")
g.add_argument("--best", type=str2bool, default=None,
               help="which checkpoint of the run in --ckpt_dir to load: the best (True) or "
                    "the latest (False). Default: testing loads the best, resuming the latest")
g.add_argument("--ckpt", type=str, default=None,
               help="test or resume this checkpoint file instead (a run continues with the "
                    "config stored in it)")
g.add_argument("--export", type=str, default=None, metavar="DIR",
               help="with --is_train=False: write the checkpoint as a Paddle Inference model "
                    "of the whole episode (policy at its mean) into DIR instead of testing it")
g.add_argument("--random_seed", type=int, default=1,
               help="seed of the data split, batch order, initial weights and location noise")
g.add_argument("--data_dir", type=str, default="./data",
               help="folder holding the MNIST idx files (or a MNIST/ subfolder with them)")
g.add_argument("--ckpt_dir", type=str, default="./ckpt", help="where checkpoints are saved")
g.add_argument("--logs_dir", type=str, default="./logs/",
               help="where the log, the per-epoch metrics and TensorBoard go")
g.add_argument("--plot_dir", type=str, default="./plots/",
               help="where glimpse dumps and learning curves go")
g.add_argument("--use_tensorboard", type=str2bool, default=False,
               help="write TensorBoard scalars (tensorboardX) under logs_dir/<model_name>")
g.add_argument("--resume", type=str2bool, default=False,
               help="continue a run from its checkpoint (--ckpt FILE, or its --ckpt_dir), with "
                    "the config it was started with; flags given now override it")
g.add_argument("--save_freq", type=int, default=10, help="save an epoch checkpoint every N epochs")
g.add_argument("--keep_ckpts", type=int, default=3,
               help="keep this many of the latest epoch checkpoints (the best and an "
                    "interrupted one are always kept)")
g.add_argument("--plot_freq", type=int, default=50,
               help="dump the glimpses of 9 training images for plot_glimpses.py every N "
                    "epochs (0: never)")

# Flags that say what this invocation does, never taken from a checkpoint's stored config.
MODE_KEYS = ("is_train", "resume", "best", "ckpt", "export", "use_gpu")
# Flags that pick a run's validation split out of the training set.
SPLIT_KEYS = ("random_seed", "valid_size")
# Folders: a checkpoint stores them absolute, so that a resumed run finds them from anywhere.
DIR_KEYS = ("data_dir", "ckpt_dir", "logs_dir", "plot_dir")
_UNSET = object()


def get_config(argv=None):
    """(config, given): the checked config of these flags (check_config) and the set of
    flags given on the command line."""
    # argparse sets a default only where the namespace has no value yet: what is still unset
    # after parsing into a namespace of sentinels was not on the command line.
    unset = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != "help"})
    given = {k for k, v in vars(parser.parse_args(argv, namespace=unset)).items()
             if v is not _UNSET}
    return check_config(parser.parse_args(argv)), given


def check_config(config):
    """A new config: `config` with the values that depend on others settled (canvas and
    clutter by dataset, eval_std). Impossible values raise one RamError naming the flag and
    the fix."""
    def need(ok, msg):
        if not ok:
            raise RamError(msg)
    c = argparse.Namespace(**vars(config))
    for name in ("patch_size", "num_patches", "glimpse_scale", "num_glimpses", "rollouts", "M",
                 "batch_size", "save_freq", "keep_ckpts"):
        need(getattr(c, name) >= 1, f"--{name} must be >= 1 (got {getattr(c, name)})")
    for name in ("loc_hidden", "glimpse_hidden", "hidden_size"):
        need(getattr(c, name) >= 2, f"--{name} must be >= 2 (got {getattr(c, name)})")
    need(0 <= c.valid_size < 1, f"--valid_size must be in [0, 1) (got {c.valid_size})")
    need(0 < c.lr_factor < 1, f"--lr_factor must be in (0, 1) (got {c.lr_factor})")
    need(c.std > 0, f"--std must be > 0 (got {c.std})")
    need(c.eval_std is None or c.eval_std >= 0, f"--eval_std must be >= 0 (got {c.eval_std})")
    need(c.clip_grad >= 0, f"--clip_grad must be >= 0 (got {c.clip_grad})")
    need(c.plot_freq >= 0, f"--plot_freq must be >= 0 (got {c.plot_freq})")
    need(0 <= c.random_seed < 2 ** 32, f"--random_seed must be in [0, 2**32) (got {c.random_seed})")
    need(c.epochs >= 1 or not c.is_train or c.resume,
         f"--epochs {c.epochs} trains nothing; pass the number of epochs to train, e.g. "
         "--epochs 500")
    need(c.valid_size > 0 or not c.is_train,
         "--valid_size 0 leaves nothing to validate on; training needs e.g. --valid_size 0.1")
    need(not c.export or not c.is_train,
         f"--export {c.export} writes a trained model; add --is_train=False (and --ckpt FILE)")
    c.canvas, c.clutter = settle_canvas(c.dataset, c.canvas, getattr(c, "clutter", None))
    if c.eval_std is None and c.is_train and not c.resume:
        c.eval_std = EVAL_STD  # a new run's; stored in its checkpoints
    # A batch of canvases, the retina's summed-area table and its padded copy: at most about
    # 32 bytes a pixel. Say so before allocating instead of failing inside Paddle.
    need_bytes, have = 32 * c.batch_size * c.canvas ** 2, available_memory()
    need(have is None or need_bytes < have,
         f"--canvas {c.canvas} needs about {need_bytes / 2 ** 30:.1f} GiB per batch of "
         f"{c.batch_size} images, more than the {(have or 0) / 2 ** 30:.1f} GiB of memory "
         "available; use a smaller --canvas or --batch_size")
    need(c.patch_size <= c.canvas,
         f"--patch_size {c.patch_size} is wider than the {c.canvas}x{c.canvas} images: the "
         f"sharpest patch would be mostly zero padding; use at most {c.canvas} (the paper: 8 on "
         "28x28, 12 on larger canvases)")
    return c


def notes(config):
    """One-line notes on legal but suspicious settings."""
    said = []
    widest = config.patch_size * config.glimpse_scale ** (config.num_patches - 1)
    if widest > config.canvas:
        said.append(f"[!] the widest patch is {widest}x{widest} pixels on {config.canvas}x"
                    f"{config.canvas} images: the part beyond the image is zero padding, which "
                    "costs time and tells nothing; check --patch_size, --glimpse_scale and "
                    "--num_patches")
    if config.rollouts > 1 and config.reinforce_weight == 0:
        said.append("[!] --rollouts has no effect with --reinforce_weight 0")
    return said


def resumed_config(config, given, stored):
    """The config a resumed run continues with: the stored one (the run as it was started),
    with this invocation's mode flags and the flags given on its command line. Returns
    (config, notes): a note names every given flag that differs from the run's; changing the
    architecture of a trained model is an error."""
    merged = vars(parser.parse_args([]))
    merged.update({k: v for k, v in stored.items() if k in merged})
    merged["clutter"] = stored.get("clutter")  # settled by check_config if not stored
    changed = []
    for key in sorted(given - set(MODE_KEYS)):
        value = getattr(config, key)
        same = (os.path.abspath(value) == os.path.abspath(stored[key]) if key in DIR_KEYS
                else stored.get(key) == value) if key in stored else True
        if not same:
            if key in ARCH_KEYS and key != "std":  # the policy's exploration may change
                raise RamError(f"the run was trained with --{key} {stored[key]}, not {value}; a "
                               f"resumed run keeps its architecture (drop --{key})")
            changed.append(f"--{key} {value} (the run had {stored[key]})")
    merged.update({k: getattr(config, k) for k in given | set(MODE_KEYS)})
    resumed = check_config(argparse.Namespace(**merged))
    said = [f"[*] Resuming with {', '.join(changed)}"] if changed else []
    return resumed, said


def checkpoint_config(stored, eval_std=None):
    """The config that tests a checkpoint whose file stores the flags `stored` (a dict): the
    defaults in test mode, with the stored architecture, dataset and validation split, and
    eval_std (the std testing samples at with M = 1). Stored flags that no longer exist are
    ignored, so older files still load."""
    config = vars(parser.parse_args(["--is_train", "False"]))
    config.update({k: stored[k] for k in ARCH_KEYS + SPLIT_KEYS if k in stored})
    config["eval_std"] = eval_std
    return check_config(argparse.Namespace(**config))


def tested_config(config, given, stored, eval_std):
    """The config of a test run: the checkpoint's architecture and dataset
    (checkpoint_config) with this invocation's other flags (--random_seed draws the test's
    fixations), and its --eval_std if given, else the checkpoint's `eval_std`."""
    tested = vars(checkpoint_config(stored, eval_std))
    tested.update({k: v for k, v in vars(config).items() if k not in ARCH_KEYS + ("eval_std",)})
    if "eval_std" in given:
        tested["eval_std"] = config.eval_std
    return argparse.Namespace(**tested)
