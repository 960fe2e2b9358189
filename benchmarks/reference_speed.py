"""The reference implementation's training speed beside ours, side by side on this machine.

    python benchmarks/reference_speed.py --ref_dir PATH [--rounds 3] [--images 54000]

PATH is a checkout of the reference implementation, the PaddlePaddle RAM this project
reimplements (git clone https://github.com/MiuGod0126/RAM-Paddle; measured at commit
f4204ed). Nothing else in this project needs it. Its main.py downloads MNIST; here it reads
the same idx files as ours (--data_dir), through its own transforms.

The two code bases both have modules named model, trainer and config, so each runs in its
own worker process (benchmarks/ab_step.py's Worker), and the driver asks them in turn for one
window each, `--rounds` times after a warm-up round; the one waiting blocks on a pipe. Both
get this project's CPU environment (utils.tune_cpu_env: MKL on every core, OpenMP at one
thread, MKL_DEBUG_CPU_TYPE for MKL's fast kernels on AMD), which makes the reference's step
faster than its own default does. A window is one epoch: `--images` training images (default
all 54,000) and a ninth as many validation images (6,000). Fewer images give a quick look,
but then what an epoch costs once (the reference's loaders start 4 processes each) weighs
more:

- reference: its Trainer.train_one_epoch with its data pipeline (paddle.vision's MNIST with
  its transforms, a DataLoader with the 4 workers its main.py uses on a CPU), batch 128, its
  defaults; then its Trainer.validate. And its step alone: train_one_epoch over the same
  batches already in memory, its most favourable figure.
- ours: Trainer.train_one_epoch and Trainer.validate, as Trainer.train runs them in an epoch,
  with the defaults of config.py (batch 512, one validation pass); and train_one_epoch at
  batch 128, the reference's.

Reported (medians over the rounds): samples/s of each, the seconds of a whole epoch (training
plus validation) of each, and the time to accuracy: the reference's `--ref_epochs` (141, its
epochs to 1.3% validation error) against our `--our_epochs` (190, the shipped 28x28 run's
first at 1.12%, logs/tuning/time_to_accuracy.log), both at the epoch times measured here,
once with the reference's whole epoch and once with its step alone plus its validation. Last
line: `ratio: R`, the time-to-accuracy ratio against the reference's whole epoch.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ab_step import Worker  # noqa: E402
from utils import tune_cpu_env  # noqa: E402

TRAIN, VALID = 54000, 6000  # the reference's split of MNIST's 60,000 training images

# Both workers start with this: serve(phases, *extra) answers each request line with the
# seconds of every phase(epoch) in turn, then the extra values.
SERVE = r"""
import sys, time
reply, sys.stdout = sys.stdout, sys.stderr  # progress bars and logs stay off the pipe


def serve(phases, *extra):
    print("ready", file=reply, flush=True)
    for epoch, _ in enumerate(sys.stdin):
        times = []
        for phase in phases:
            tic = time.perf_counter()
            phase(epoch)
            times.append(time.perf_counter() - tic)
        print(*times, *extra, file=reply, flush=True)
"""

# Replies: training seconds, validation seconds, training seconds with the batches in memory.
REFERENCE = SERVE + r"""
import os, types
ref_dir, images_gz, labels_gz, n_train, scratch = sys.argv[1:6]
n_train = int(n_train)
sys.path.insert(0, ref_dir)
os.chdir(scratch)  # it writes ./plots/ below the working directory
# Its trainer imports tensorboard_logger (an old package) even when TensorBoard is off.
tb = types.ModuleType("tensorboard_logger")
tb.configure = tb.log_value = lambda *args, **kwargs: None
sys.modules.setdefault("tensorboard_logger", tb)
import numpy as np
import paddle
from paddle.io import DataLoader, Subset
from paddle.vision import transforms
from config import parser
from trainer import Trainer
config = parser.parse_args(["--use_gpu", "False", "--logs_dir", scratch])
paddle.seed(config.random_seed)
# Its data_loader.py, with the files given instead of downloaded: the same transforms, its
# seeded split, and on a CPU the 4 loader workers that its main.py leaves as the default.
trans = transforms.Compose([transforms.Grayscale(num_output_channels=1), transforms.ToTensor(),
                            transforms.Normalize(mean=(0.1307,), std=(0.3081,))])
data = paddle.vision.datasets.MNIST(image_path=images_gz, label_path=labels_gz, mode="train",
                                    transform=trans, download=False)
order = list(range(len(data)))
np.random.seed(config.random_seed)
np.random.shuffle(order)
split = int(np.floor(config.valid_size * len(data)))
train = Subset(data, order[split:split + n_train])
valid = Subset(data, order[:n_train // 9])
loaders = (DataLoader(train, batch_size=config.batch_size, num_workers=4, shuffle=True),
           DataLoader(valid, batch_size=config.batch_size, num_workers=4))
trainer = Trainer(config, loaders)


class InMemory(list):  # the same batches, loaded once: what its step costs on its own
    dataset = train


in_memory = InMemory(loaders[0])


def train_on(loader):
    def phase(epoch):
        trainer.train_loader = loader
        trainer.train_one_epoch(epoch)
    return phase


serve([train_on(loaders[0]), trainer.validate, train_on(in_memory)])
"""

# Replies: training seconds, validation seconds, training seconds at batch 128, the batch size.
OURS = SERVE + r"""
root, data_dir, n_train, scratch = sys.argv[1:5]
n_train = int(n_train)
sys.path.insert(0, root)
import data_loader
from config import get_config
from trainer import Trainer
from utils import set_seed
c, _ = get_config(["--logs_dir", scratch, "--ckpt_dir", scratch, "--plot_dir", scratch])
set_seed(c.random_seed)
trainer = Trainer(c)
images, labels = data_loader.load_mnist(data_dir, "train")
train_idx, valid_idx = data_loader.split_indices(len(labels), c.valid_size, c.random_seed)
train_idx, valid_idx = train_idx[:n_train], valid_idx[:n_train // 9]
train, train_128 = (data_loader.make_loader(images[train_idx], labels[train_idx], batch,
                                             shuffle=True, seed=c.random_seed)
                    for batch in (c.batch_size, 128))
valid = data_loader.make_loader(images[valid_idx], labels[valid_idx], c.batch_size)


def train_on(loader):
    def phase(epoch):
        loader.set_epoch(epoch)
        trainer.train_one_epoch(loader)
    return phase


serve([train_on(train), lambda epoch: trainer.validate(valid), train_on(train_128)],
      c.batch_size)
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref_dir", required=True,
                   help="a checkout of https://github.com/MiuGod0126/RAM-Paddle")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=TRAIN,
                   help="training images per window (a ninth as many validate)")
    p.add_argument("--ref_epochs", type=int, default=141)
    p.add_argument("--our_epochs", type=int, default=190)
    args = p.parse_args()
    if min(args.rounds, args.ref_epochs, args.our_epochs) < 1 or not 9 <= args.images <= TRAIN:
        p.error(f"--rounds and the epochs must be >= 1, --images in [9, {TRAIN}]")
    if not os.path.isfile(os.path.join(args.ref_dir, "trainer.py")):
        raise SystemExit(f"error: --ref_dir {args.ref_dir} has no trainer.py; clone "
                         "https://github.com/MiuGod0126/RAM-Paddle and point --ref_dir at it")
    import data_loader  # numpy only, no Paddle in this process
    gz = data_loader.find_mnist(args.data_dir, "train")
    if None in gz:
        raise SystemExit(f"error: no MNIST training files in {args.data_dir} (or its MNIST/ "
                         "subfolder); pass --data_dir")
    threads = tune_cpu_env()  # inherited by both workers
    print(f"MKL threads {threads}, OpenMP threads {os.environ['OMP_NUM_THREADS']}, "
          f"MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset')}; "
          f"{args.images} training and {args.images // 9} validation images a window")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = {name: os.path.join(tmp, name) for name in ("reference", "ours")}
        workers = {
            "reference": Worker(REFERENCE, [os.path.abspath(args.ref_dir), *gz, args.images,
                                            scratch["reference"]], scratch["reference"]),
            "ours": Worker(OURS, [ROOT, os.path.abspath(args.data_dir), args.images,
                                  scratch["ours"]], scratch["ours"])}
        times = {name: [] for name in workers}
        for r in range(args.rounds + 1):  # round 0 warms both up
            for name, worker in workers.items():
                time.sleep(0.3)
                reply = worker.window(r)
                if r:
                    times[name].append(reply)
        for worker in workers.values():
            worker.close()

    def rate(name, i, images):
        return statistics.median(images / t[i] for t in times[name])

    n, v = args.images, args.images // 9
    ref = {"train": rate("reference", 0, n), "valid": rate("reference", 1, v),
           "step": rate("reference", 2, n)}
    ours = {"train": rate("ours", 0, n), "valid": rate("ours", 1, v),
            "train_128": rate("ours", 2, n)}
    batch = int(times["ours"][0][3])
    ref_epoch = TRAIN / ref["train"] + VALID / ref["valid"]
    ref_step_epoch = TRAIN / ref["step"] + VALID / ref["valid"]
    our_epoch = TRAIN / ours["train"] + VALID / ours["valid"]
    print(f"reference (batch 128): trains {ref['train']:,.0f} samples/s with its data loading, "
          f"{ref['step']:,.0f} with the batches in memory (its step alone); validates "
          f"{ref['valid']:,.0f}/s; an epoch {ref_epoch:.1f} s ({ref_step_epoch:.1f} s with its "
          f"step alone)")
    print(f"ours: trains {ours['train']:,.0f} samples/s at batch {batch} (config.py's), "
          f"{ours['train_128']:,.0f} at batch 128; validates {ours['valid']:,.0f}/s; an epoch "
          f"{our_epoch:.1f} s")
    print(f"training speed against the reference's step alone: "
          f"{ours['train_128'] / ref['step']:.2f}x at batch 128, "
          f"{ours['train'] / ref['step']:.2f}x at batch {batch} (against its training with its "
          f"data loading: {ours['train_128'] / ref['train']:.2f}x and "
          f"{ours['train'] / ref['train']:.2f}x)")
    ref_min, ref_step_min = args.ref_epochs * ref_epoch / 60, args.ref_epochs * ref_step_epoch / 60
    our_min = args.our_epochs * our_epoch / 60
    print(f"time to accuracy here: the reference's {args.ref_epochs} epochs {ref_min:.1f} min "
          f"({ref_step_min:.1f} with its step alone), our {args.our_epochs} epochs "
          f"{our_min:.1f} min -> {ref_min / our_min:.2f}x sooner "
          f"({ref_step_min / our_min:.2f}x against its step alone)")
    print(f"ratio: {ref_min / our_min:.3f}")


if __name__ == "__main__":
    main()
