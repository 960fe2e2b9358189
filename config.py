"""Command-line flags, grouped as in the reference implementation, plus checks on their values."""
import argparse

from data_loader import DATASETS, settle_canvas
from model import FIRST_FIXATIONS
from modules import CoreNetwork
from utils import ARCH_KEYS, RamError, available_memory

CORES = CoreNetwork.KINDS

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
    epilog="Examples: `python main.py` trains; `python main.py --resume=True --best True` "
           "resumes from the best checkpoint; `python main.py --is_train=False --best True` "
           "tests it on the MNIST test set. `python -m paddle.distributed.launch "
           "--nproc_per_node N main.py ...` trains data-parallel in N processes (GPUs, or CPU "
           "with gloo; several machines with --ips).")


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
g.add_argument("--core", choices=CORES, default="rnn",
               help="core network: rnn (ReLU RNN, the paper's), irnn (the same, recurrent "
                    "weights initialised to the identity), lstm")

g = group("Reinforce Params")
g.add_argument("--std", type=float, default=0.1,
               help="initial std of the Gaussian location policy")
g.add_argument("--eval_std", type=float, default=None,
               help="std of the location policy when testing with M = 1 (0: the policy's mean "
                    "itself, one deterministic trajectory): the policy's mean "
                    "fixations with less noise around them than --std's exploration err less "
                    "(see logs/README.md). Validation, and M > 1, sample at the training std. "
                    "Default: %g when training from scratch (saved in its checkpoints); when "
                    "testing or resuming, the checkpoint's (files from before this flag, and "
                    "the reference's: their training std)" % EVAL_STD)
g.add_argument("--M", type=int, default=1,
               help="Monte-Carlo samples per image for validation and test (log-probs averaged)")
g.add_argument("--valid_passes", type=int, default=1,
               help="validation accuracy (which picks the best checkpoint and drives the lr "
                    "schedule and early stopping) is the mean of this many passes over the "
                    "validation set, each with its own location samples (pass p drawn from seed "
                    "VALID_NOISE_SEED + p, the same every epoch, apart from training's stream)")
g.add_argument("--reinforce_core", type=str2bool, default=False,
               help="let the REINFORCE gradient reach the core and glimpse networks too (the "
                    "paper's objective); False: only the location network (the reference)")
g.add_argument("--reinforce_weight", type=float, default=0.01,
               help="weight of the REINFORCE term in the hybrid loss")
g.add_argument("--first_fixation", choices=FIRST_FIXATIONS, default="random",
               help="where the first glimpse looks: uniformly random (the reference), the "
                    "image centre, or learned (the location network applied to h_0 = 0, "
                    "trained by REINFORCE like every other fixation)")
g.add_argument("--rollouts", type=int, default=1,
               help="training: each image is seen this many times per step, each copy its own "
                    "episode with its own location samples (less variance in REINFORCE; a "
                    "step costs this many times as much)")
g.add_argument("--baseline", choices=("learned", "loo"), default="learned",
               help="the REINFORCE baseline: the baseline network b_t(h_t) (learned), or the "
                    "mean reward of the same image's other rollouts (loo, needs --rollouts >= 2)")

g = group("Data Params")
g.add_argument("--dataset", choices=DATASETS, default="mnist",
               help="mnist: 28x28 digits; translated: a digit at a random place on a blank "
                    "canvas; cluttered: translated plus 8x8 pieces of other digits")
g.add_argument("--canvas", type=int, default=60,
               help="side of the translated/cluttered image in pixels (the paper: 60, 100)")
g.add_argument("--clutter", type=int, default=None,
               help="# 8x8 clutter pieces for --dataset cluttered (default: 4 up to 60x60, else 8)")
g.add_argument("--shift", type=int, default=0,
               help="mnist training images move by a random whole number of pixels in "
                    "[-shift, shift] on each axis, drawn afresh every epoch (augmentation; "
                    "validation and test images never move; 0: off)")
g.add_argument("--valid_size", type=float, default=0.1,
               help="fraction of the training set held out for validation, in [0, 1)")
g.add_argument("--batch_size", type=int, default=512,
               help="# images per optimizer step, globally: a run of N processes "
                    "(paddle.distributed.launch) gives each batch_size/N of them, so the "
                    "steps, and the lr, are those of one process")
g.add_argument("--shuffle", type=str2bool, default=True,
               help="shuffle the train/valid split and every training epoch")
g.add_argument("--show_sample", type=str2bool, default=False,
               help="save a 3x3 grid of training images to <plot_dir>/<dataset>_sample.png")

g = group("Training Params")
g.add_argument("--is_train", type=str2bool, default=True, help="train (True) or test (False)")
g.add_argument("--epochs", type=int, default=500,
               help="total # epochs; a resumed run continues up to this number")
g.add_argument("--init_lr", type=float, default=5e-4,
               help="initial learning rate (Adam); the same for any # of processes, since "
                    "--batch_size is global")
g.add_argument("--lr_patience", type=int, default=12,
               help="epochs without a better validation accuracy before the lr is reduced")
g.add_argument("--lr_factor", type=float, default=0.5, help="ReduceOnPlateau multiplies the lr by this")
g.add_argument("--train_patience", type=int, default=50,
               help="epochs without a better validation accuracy before training stops")
g.add_argument("--weight_decay", type=float, default=0.0, help="L2 weight decay of Adam")
g.add_argument("--clip_grad", type=float, default=0.0,
               help="clip the gradient of all parameters to this global L2 norm (0: no clipping)")
g.add_argument("--ema_decay", type=float, default=0.0,
               help="validate, keep and test an exponential moving average of the weights, "
                    "updated every step with this decay (e.g. 0.999); 0: the raw weights")

g = group("Misc.")
g.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
               help="auto: the GPU when Paddle has CUDA and a GPU is present, else the CPU")
g.add_argument("--use_gpu", type=str2bool, default=True,
               help="reference flag: False forces the CPU (same as --device cpu)")
g.add_argument("--best", type=str2bool, default=True,
               help="test/resume from the best checkpoint (True) or from an epoch checkpoint")
g.add_argument("--last_epoch", type=int, default=0,
               help="with --best False: the epoch checkpoint to load (0: the latest one)")
g.add_argument("--ckpt", type=str, default=None,
               help="test or resume this checkpoint file, adopting the architecture stored in it")
g.add_argument("--export", type=str, default=None, metavar="DIR",
               help="write the checkpoint named by --ckpt as a Paddle Inference model of the "
                    "whole episode (policy at its mean) into DIR, then exit")
g.add_argument("--random_seed", type=int, default=1,
               help="seed of the data split, batch order, initial weights and location noise")
g.add_argument("--data_dir", type=str, default="./data",
               help="folder holding the MNIST idx files (or a MNIST/ subfolder with them)")
g.add_argument("--ckpt_dir", type=str, default="./ckpt", help="where checkpoints are saved")
g.add_argument("--logs_dir", type=str, default="./logs/", help="where logs and TensorBoard go")
g.add_argument("--plot_dir", type=str, default="./plots/", help="where glimpse dumps go")
g.add_argument("--use_tensorboard", type=str2bool, default=False,
               help="write TensorBoard scalars (tensorboardX) under logs_dir/<model_name>")
g.add_argument("--resume", type=str2bool, default=False, help="resume training from a checkpoint")
g.add_argument("--overwrite", type=str2bool, default=False,
               help="let a fresh training run replace the checkpoints of the same model that "
                    "--ckpt_dir already holds (otherwise it refuses to start)")
g.add_argument("--resume_lr", type=str2bool, default=True,
               help="on resume, keep the checkpoint's lr schedule (False: restart at init_lr)")
g.add_argument("--print_freq", type=int, default=100,
               help="refresh the loss/acc shown on the progress bar every this many batches")
g.add_argument("--save_freq", type=int, default=10, help="save an epoch checkpoint every N epochs")
g.add_argument("--plot_freq", type=int, default=1,
               help="dump glimpses for plot_glimpses.py every N epochs (0: never)")


def check_config(config):
    """Reject impossible values with one line that names the flag and the fix; settle the
    values that depend on others (canvas and clutter by dataset).

    Returns warnings (strings) for legal but suspicious values.
    """
    def need(ok, msg):
        if not ok:
            raise RamError(msg)
    need(config.patch_size >= 1, f"--patch_size must be >= 1 (got {config.patch_size})")
    need(config.num_patches >= 1, f"--num_patches must be >= 1 (got {config.num_patches})")
    need(config.glimpse_scale >= 1, f"--glimpse_scale must be >= 1 (got {config.glimpse_scale})")
    need(config.num_glimpses >= 1, f"--num_glimpses must be >= 1 (got {config.num_glimpses})")
    need(0 <= config.valid_size < 1, f"--valid_size must be in [0, 1) (got {config.valid_size})")
    need(0 < config.lr_factor < 1, f"--lr_factor must be in (0, 1) (got {config.lr_factor})")
    need(config.std > 0, f"--std must be > 0 (got {config.std})")
    need(config.eval_std is None or config.eval_std >= 0,
         f"--eval_std must be >= 0 (got {config.eval_std})")
    need(config.rollouts >= 1, f"--rollouts must be >= 1 (got {config.rollouts})")
    need(config.baseline != "loo" or config.rollouts >= 2,
         f"--baseline loo compares an image's rollouts; it needs --rollouts >= 2 "
         f"(got {config.rollouts})")
    need(config.clip_grad >= 0, f"--clip_grad must be >= 0 (got {config.clip_grad})")
    need(config.M >= 1, f"--M must be >= 1 (got {config.M})")
    need(config.valid_passes >= 1, f"--valid_passes must be >= 1 (got {config.valid_passes})")
    need(0 <= config.random_seed < 2 ** 32,
         f"--random_seed must be in [0, 2**32) (got {config.random_seed})")
    need(0 <= config.ema_decay < 1, f"--ema_decay must be in [0, 1) (got {config.ema_decay})")
    need(config.batch_size >= 1, f"--batch_size must be >= 1 (got {config.batch_size})")
    for name in ("loc_hidden", "glimpse_hidden", "hidden_size"):
        need(getattr(config, name) >= 2, f"--{name} must be >= 2 (got {getattr(config, name)})")
    need(config.save_freq >= 1, f"--save_freq must be >= 1 (got {config.save_freq})")
    need(config.print_freq >= 1, f"--print_freq must be >= 1 (got {config.print_freq})")
    need(config.shift >= 0, f"--shift must be >= 0 (got {config.shift})")
    warnings = []
    if config.clutter is not None and config.dataset != "cluttered":
        warnings.append(f"[!] --clutter applies to --dataset cluttered; ignored for {config.dataset}")
    if not config.is_train:
        given = [f for f in ("show_sample", "resume", "overwrite") if getattr(config, f)]
        given += [f for f in ("rollouts", "clip_grad") if getattr(config, f) != parser.get_default(f)]
        if given:
            warnings.append("[!] " + ", ".join("--" + f for f in given)
                            + " apply to training only; ignored when testing")
    config.canvas, config.clutter = settle_canvas(config.dataset, config.canvas, config.clutter)
    if config.dataset == "mnist":
        need(config.shift < 28, f"--shift {config.shift} moves the 28x28 digits off the "
             "image; use at most 27 (a few pixels, e.g. 2)")
    else:
        need(config.shift == 0, f"--shift applies to --dataset mnist; {config.dataset} digits "
             "already sit at random places on the canvas (drop --shift)")
    image_size = config.canvas
    need(config.valid_size > 0 or not config.is_train,
         "--valid_size 0 leaves nothing to validate on; training needs e.g. --valid_size 0.1")
    # A batch of canvases, the retina's summed-area table (float64 past 256x256) and its padded
    # copy: at most about 32 bytes a pixel. Say so before allocating instead of failing inside
    # Paddle.
    need_bytes, have = 32 * config.batch_size * image_size ** 2, available_memory()
    need(have is None or need_bytes < have,
         f"--canvas {image_size} needs about {need_bytes / 2 ** 30:.1f} GiB per batch of "
         f"{config.batch_size} images, more than the {(have or 0) / 2 ** 30:.1f} GiB of memory "
         "available; use a smaller --canvas or --batch_size")
    widest = config.patch_size * config.glimpse_scale ** (config.num_patches - 1)
    if widest > 4 * image_size:
        warnings.append(f"[!] the widest patch is {widest}x{widest} pixels on a {image_size}x"
                        f"{image_size} image: mostly zero padding; check --patch_size, "
                        "--glimpse_scale and --num_patches")
    return warnings


# The flags that pick a run's validation split out of the training set.
SPLIT_KEYS = ("random_seed", "valid_size", "shuffle")


def checkpoint_config(stored):
    """The config that tests a checkpoint whose file stores the flags `stored` (a dict): the
    defaults in test mode, with the stored architecture, dataset and validation split. Stored
    flags that no longer exist are ignored, so older files still load."""
    config = get_config(["--is_train", "False"])
    for key in ARCH_KEYS + SPLIT_KEYS:
        if key in stored:
            setattr(config, key, stored[key])
    return config


def get_config(argv=None):
    config, unparsed = parser.parse_known_args(argv)
    if unparsed:
        parser.error("unrecognized arguments: " + " ".join(unparsed))
    return config
