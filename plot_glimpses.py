"""Pictures of where RAM looks, and of how its training went.

Six modes:

    python plot_glimpses.py --plot_dir plots/<model_name>/ --epoch N
        Animates the glimpses the trainer dumped at epoch N (g_N.p images, l_N.p locations):
        writes epoch_N.gif (one frame per glimpse), epoch_N.png (the numbered fixation path
        per image) and epoch_N.mp4 when ffmpeg is on PATH, into that plot_dir.

    python plot_glimpses.py --ckpt <file> [--data_dir ./data] [--num_images 9] [--out <dir>]
        Runs the checkpoint on the first test images and writes glimpses.gif (the nested retina
        boxes at each glimpse, true and predicted label), glimpses.png (the fixation path per
        image), retina.png (the patches the network received for one image) and glimpses.mp4
        when ffmpeg is on PATH.

    python plot_glimpses.py --curves logs/<name>_metrics.jsonl [--out plots/<name>_curves.png]
        Learning curves (accuracy, loss, learning rate per epoch) from a run's metrics.

    python plot_glimpses.py --compare METRICS METRICS [...] [--out plots/compare.png]
        Runs side by side: validation accuracy and learning rate per epoch of each run's
        metrics, and a table (best validation accuracy and the share of digits found there;
        mean over the 5 epochs up to every 50th epoch).

    python plot_glimpses.py --search <file> [--grid 8] [--out plots/<model_name>/search.png]
        Runs a translated or cluttered checkpoint on the test set and maps the test error and
        the share of digits found (a fixation within model.FOUND_RADIUS of the digit's centre)
        against the digit's position on the canvas, the first fixations marked.

    python plot_glimpses.py --results logs/pretrained [--out plots/results.png]
        Test error per task, the paper's beside ours (M = 1 and M = 10) and the reference
        checkpoint's, from the test records (eval_<model_name>.jsonl) in that folder.

Importing this module is cheap and has no side effects: Paddle and matplotlib are imported
when a function needs them, and figures are drawn on their own Agg canvas (no pyplot state,
no window), so the trainer can call `plot_curves` in-process.

Where a box is drawn: glimpse t looks at l = locs[t] in [-1, 1] (x = column, y = row); the
Retina's centre pixel is c = floor(0.5 * (l + 1) * W) per axis, and its patch of side
`size` covers pixels [c - size // 2, c - size // 2 + size). `pixel_centre` is the one place
that maps locations to pixels, and `glimpse_boxes` turns it into those pixel rectangles.
"""
import argparse
import glob
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np

import data_loader
from data_loader import MEAN, STD
from utils import RamError, check_not_pretrained, one_line_errors, tune_cpu_env

DPI = 80                 # every figure is saved at this dpi: pixel sizes are deterministic
PANEL = 2.25             # inches per image in an animation frame (180 px at 80 dpi)
HEADER = 0.5             # inches above the grid for the frame's title (40 px)
STRIP_PANEL = 1.25       # inches per image in the static strips (100 px)
FRAME_MS = 800           # how long each glimpse stays on screen in the animations
SCALE_COLORS = ("#ff2a2a", "#ffb000", "#00d0ff", "#7cff4a", "#ff4af0")
# Pixel 0 and 1 after MNIST's normalisation: every panel shares one grey scale.
IMAGE_RANGE = (0, 255)                          # images: pixel intensities
PATCH_RANGE = ((0 - MEAN) / STD, (1 - MEAN) / STD)  # patches: normalised, as the network sees them

# What plot_curves and compare_runs read from a run's metrics records (trainer.py writes them).
METRICS = ("lr", "std", "train_loss", "train_acc", "val_loss", "val_acc", "secs", "total_min",
           "found")


# ---------------------------------------------------------------------------- geometry
def pixel_centre(coords, size):
    """Locations in [-1, 1] (numbers or arrays) -> integer pixel indices (numpy int64).

    The network's own modules.Retina.denormalize, so a drawn box sits exactly where the
    retina looked (coords = 1 gives `size`, one pixel past the image, as in the reference).
    """
    import paddle
    from modules import Retina
    c = paddle.to_tensor(np.asarray(coords, dtype=np.float32))
    return Retina.denormalize(size, c).numpy()


def glimpse_boxes(loc, H, W, g, k, s):
    """The k retina patches of one glimpse as pixel rectangles.

    Args: loc [2] in [-1, 1] (x, y); H, W image size; g patch size, k patches, s scale.
    Returns: [(x0, y0, size)] for i = 0..k-1, size = g * s**i: the patch covers columns
    x0 .. x0 + size - 1 and rows y0 .. y0 + size - 1 (possibly partly outside the image),
    i.e. exactly the pixels modules.Retina reads. Drawn over imshow, whose
    pixel j spans j - 0.5 .. j + 0.5, that is the rectangle with lower-left corner
    (x0 - 0.5, y0 - 0.5) and width = height = size.
    """
    cx = int(pixel_centre(loc[0], W))
    cy = int(pixel_centre(loc[1], H))
    boxes = []
    for i in range(int(k)):
        size = int(g) * int(s) ** i
        boxes.append((cx - size // 2, cy - size // 2, size))
    return boxes


def crop_box(image, box):
    """The pixels of `image` [H, W] inside box (x0, y0, size), zeros outside the image."""
    x0, y0, size = box
    H, W = image.shape
    out = np.zeros((size, size), dtype=image.dtype)
    r0, r1 = max(y0, 0), min(y0 + size, H)
    c0, c1 = max(x0, 0), min(x0 + size, W)
    if r0 < r1 and c0 < c1:
        out[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = image[r0:r1, c0:c1]
    return out


# ---------------------------------------------------------------------------- drawing
def _figure(width_in, height_in):
    """A matplotlib Figure on its own Agg canvas: no pyplot, no backend switch, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _to_rgb(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _show(ax, image):
    H, W = image.shape
    ax.imshow(image, cmap="gray", vmin=IMAGE_RANGE[0], vmax=IMAGE_RANGE[1], interpolation="nearest")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_boxes(ax, loc, H, W, g, k, s, linewidth=1.6):
    """Draw the k nested retina boxes of one fixation on an imshow axes; returns the patches."""
    from matplotlib.patches import Rectangle
    drawn = []
    for i, (x0, y0, size) in enumerate(glimpse_boxes(loc, H, W, g, k, s)):
        rect = Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False,
                         edgecolor=SCALE_COLORS[i % len(SCALE_COLORS)], linewidth=linewidth)
        ax.add_patch(rect)
        drawn.append(rect)
    return drawn


def _centres(locs_one, H, W):
    """[T, 2] locations of one image -> pixel centres (xs, ys)."""
    locs_one = np.asarray(locs_one)
    return pixel_centre(locs_one[:, 0], W), pixel_centre(locs_one[:, 1], H)


def _draw_path(ax, locs_one, H, W, upto=None, numbers=True):
    """The fixation path of one image (glimpses 0..upto), numbered from 1."""
    xs, ys = _centres(locs_one, H, W)
    n = len(xs) if upto is None else upto + 1
    ax.plot(xs[:n], ys[:n], "-", color="#40c0ff", linewidth=1.0, alpha=0.9)
    ax.plot(xs[:n], ys[:n], "o", color="#40c0ff", markersize=2.5)
    if numbers:
        for t in range(n):
            ax.text(xs[t], ys[t], str(t + 1), color="yellow", fontsize=7, fontweight="bold",
                    ha="center", va="center", clip_on=True,
                    bbox=dict(boxstyle="round,pad=0.1", fc="black", ec="none", alpha=0.6))


def grid_shape(n):
    """(rows, cols) of the animation grid for n images: ceil(sqrt(n)) columns."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def frame_size(n):
    """(width, height) in pixels of every animation frame for n images (540 x 580 for 9)."""
    rows, cols = grid_shape(n)
    return int(round(cols * PANEL * DPI)), int(round((rows * PANEL + HEADER) * DPI))


def render_frames(images, locs, g, k, s, titles=None, title_colors=None, header=""):
    """One RGB frame [h, w, 3] per glimpse: every image with its k boxes at that fixation.

    images [n, H, W], locs [T, n, 2]; titles / title_colors: one per image; header: text put
    before 'glimpse t/T' at the top of each frame (it also keeps every frame distinct, so a
    GIF writer never merges two of them).
    """
    n, H, W = images.shape
    T = locs.shape[0]
    rows, cols = grid_shape(n)
    width_in, height_in = cols * PANEL, rows * PANEL + HEADER
    frames = []
    for t in range(T):
        fig = _figure(width_in, height_in)
        axes = fig.subplots(rows, cols, squeeze=False)
        fig.subplots_adjust(left=0.03, right=0.97, bottom=0.02,
                            top=1 - (HEADER + 0.05) / height_in, wspace=0.12, hspace=0.28)
        for i, ax in enumerate(axes.ravel()):
            if i >= n:
                ax.axis("off")
                continue
            _show(ax, images[i])
            _draw_path(ax, locs[:, i], H, W, upto=t, numbers=False)
            draw_boxes(ax, locs[t, i], H, W, g, k, s)
            if titles is not None:
                ax.set_title(titles[i], fontsize=10, pad=3,
                             color="black" if title_colors is None else title_colors[i])
        fig.suptitle(f"{header}glimpse {t + 1}/{T}", fontsize=12,
                     y=1 - 0.12 / height_in, va="top")
        frames.append(_to_rgb(fig))
    return frames


def render_strips(images, locs, g, k, s, path, row_titles=None, row_colors=None, header=""):
    """Static PNG, one row per image: its numbered fixation path, then each glimpse's boxes."""
    n, H, W = images.shape
    T = locs.shape[0]
    width_in, height_in = (T + 1) * STRIP_PANEL, n * STRIP_PANEL + 0.45
    fig = _figure(width_in, height_in)
    axes = fig.subplots(n, T + 1, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - 0.5 / height_in,
                        wspace=0.06, hspace=0.3)
    for i in range(n):
        ax = axes[i, 0]
        _show(ax, images[i])
        _draw_path(ax, locs[:, i], H, W)
        ax.set_title("path" if row_titles is None else row_titles[i], fontsize=8, pad=2,
                     color="black" if row_colors is None else row_colors[i])
        for t in range(T):
            ax = axes[i, t + 1]
            _show(ax, images[i])
            draw_boxes(ax, locs[t, i], H, W, g, k, s, linewidth=1.2)
            ax.set_title(f"glimpse {t + 1}", fontsize=7, pad=2)
    fig.suptitle(header + "numbered fixation path, then the retina boxes of each glimpse",
                 fontsize=9, y=1 - 0.08 / height_in, va="top")
    _save(fig, path)
    return path


def render_retina(image, locs_one, patches, g, k, s, path, header=""):
    """What the network received from one image: per glimpse (columns) the image with the
    boxes, then the k patches [T, k, g, g] exactly as fed to the glimpse network."""
    H, W = image.shape
    T = len(locs_one)
    width_in, height_in = max(T, 3) * 1.3, (k + 1) * 1.3 + 0.5
    fig = _figure(width_in, height_in)
    axes = fig.subplots(k + 1, T, squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.02, top=1 - 0.55 / height_in,
                        wspace=0.08, hspace=0.12)
    for t in range(T):
        ax = axes[0, t]
        _show(ax, image)
        draw_boxes(ax, locs_one[t], H, W, g, k, s, linewidth=1.2)
        ax.set_title(f"glimpse {t + 1}", fontsize=8, pad=2)
        for i in range(k):
            ax = axes[i + 1, t]
            ax.imshow(patches[t, i], cmap="gray", vmin=PATCH_RANGE[0], vmax=PATCH_RANGE[1],
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(SCALE_COLORS[i % len(SCALE_COLORS)])
                side.set_linewidth(1.5)
    axes[0, 0].set_ylabel("image", fontsize=8)
    for i in range(k):
        size = g * s ** i
        axes[i + 1, 0].set_ylabel(f"{size}x{size}" + (f"\n->{g}x{g}" if size != g else ""),
                                  fontsize=7)
    for ax in axes[:, T:].ravel():
        ax.axis("off")
    fig.suptitle(header + "what the network received", fontsize=9,
                 y=1 - 0.08 / height_in, va="top")
    _save(fig, path)
    return path


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)


def save_gif(frames, path, frame_ms=FRAME_MS):
    """Write RGB frames as a looping GIF with Pillow (no ffmpeg needed)."""
    from PIL import Image
    ims = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
           for f in frames]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=frame_ms, loop=0)
    return path


def save_mp4(frames, path, frame_ms=FRAME_MS):
    """Write an MP4 with ffmpeg when it is on PATH; returns the path, or None (no ffmpeg or
    ffmpeg failed: a warning on stderr, since the GIF is written anyway)."""
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        return None
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{1000.0 / frame_ms:g}", "-i", "-",
           "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", path]
    try:
        done = subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes()
                                                  for f in frames),
                              capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"warning: ffmpeg could not write {path} ({type(e).__name__}); the GIF is there",
              file=sys.stderr)
        return None
    if done.returncode != 0 or not os.path.isfile(path):
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        print(f"warning: ffmpeg could not write {path} ({last}); the GIF is there",
              file=sys.stderr)
        return None
    return path


def write_animation(frames, stem, frame_ms=FRAME_MS):
    """stem.gif always, stem.mp4 too when ffmpeg is available; returns the written paths."""
    written = [save_gif(frames, stem + ".gif", frame_ms)]
    mp4 = save_mp4(frames, stem + ".mp4", frame_ms)
    if mp4:
        written.append(mp4)
    return written


# ---------------------------------------------------------------------------- dump mode
def _load_pickle(path, what):
    if not os.path.isfile(path):
        raise RamError(f"{what} {path} not found")
    try:
        with open(path, "rb") as f:
            return np.asarray(pickle.load(f))
    except Exception as e:
        raise RamError(f"cannot read {what} {path} ({type(e).__name__}); it is not a pickle "
                       "written by the trainer") from None


def _latest_dump(plot_dir):
    epochs = [int(m.group(1)) for p in glob.glob(os.path.join(plot_dir, "g_*.p"))
              if (m := re.search(r"g_(\d+)\.p$", p))]
    if not epochs:
        raise RamError(f"no glimpse dumps (g_<epoch>.p) in {plot_dir}; train with --plot_freq "
                       "1, or pass the plot_dir of your model (plots/<model_name>/)")
    return max(epochs)


def retina_params(args, plot_dir):
    """(g, k, s) for dump mode: the flags win, then <ckpt_dir>/<model_name>_params.json, then
    the defaults 8, 1, 1. Returns also where they came from."""
    stored, source = {}, "defaults"
    name = os.path.basename(os.path.normpath(plot_dir))
    params = os.path.join(args.ckpt_dir, name + "_params.json")
    if os.path.isfile(params):
        try:
            with open(params) as f:
                stored, source = json.load(f), params
        except (OSError, ValueError):
            stored = {}
    g = args.patch_size or stored.get("patch_size", 8)
    k = args.num_patches or stored.get("num_patches", 1)
    s = args.glimpse_scale or stored.get("glimpse_scale", 1)
    return int(g), int(k), int(s), source


def plot_dump(args):
    plot_dir = args.plot_dir
    if not os.path.isdir(plot_dir):
        raise RamError(f"plot dir {plot_dir} not found; pass --plot_dir plots/<model_name>/")
    epoch = args.epoch if args.epoch is not None else _latest_dump(plot_dir)
    images = _load_pickle(os.path.join(plot_dir, f"g_{epoch}.p"), "glimpse dump")
    locs = _load_pickle(os.path.join(plot_dir, f"l_{epoch}.p"), "location dump")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or locs.ndim != 3 or locs.shape[2] != 2 or locs.shape[1] != len(images):
        raise RamError(f"dumps of epoch {epoch} in {plot_dir} do not fit: images {images.shape}"
                       f" should be [n, H, W] and locations {locs.shape} [T, n, 2]")
    g, k, s, _ = retina_params(args, plot_dir)
    images, locs = images.astype(np.float32), locs.astype(np.float32)
    stem = os.path.join(plot_dir, f"epoch_{epoch}")
    frames = render_frames(images, locs, g, k, s,
                           titles=[f"#{i + 1}" for i in range(len(images))],
                           header=f"epoch {epoch}: ")
    written = write_animation(frames, stem, args.frame_ms)
    written.append(render_strips(images, locs, g, k, s, stem + ".png",
                                 header=f"epoch {epoch}: "))
    return written


# ---------------------------------------------------------------------------- checkpoint mode
def run_model(model, x, num_glimpses, seed, std):
    """One seeded rollout on x [n, 1, H, W] (numpy) at policy std `std`. Returns locs
    [T, n, 2], predictions [n] and the patches the network received [T, n, k, g, g]."""
    import paddle
    from utils import set_seed
    set_seed(seed)
    retina = model.sensor.retina
    with paddle.no_grad():
        xt = paddle.to_tensor(x)
        log_probas, _, _, locs = model.rollout(xt, num_glimpses, std=std)
        scene = retina.scene(xt)
        patches = [retina.foveate(scene, locs[t]).reshape([x.shape[0], retina.k, retina.g,
                                                           retina.g])
                   for t in range(num_glimpses)]
        patches = paddle.stack(patches)
    return locs.numpy(), log_probas.argmax(1).numpy(), patches.numpy()


def plot_checkpoint(args):
    from checkpoint import load_model
    from utils import model_name
    if args.num_images < 1:
        raise RamError(f"--num_images must be >= 1 (got {args.num_images})")
    model, cfg = load_model(args.ckpt)
    # The first test images of the checkpoint's own dataset (fixed canvases for translated
    # and cluttered), exactly as main.py tests it.
    x, y = next(iter(data_loader.get_test_loader(args.data_dir, args.num_images, cfg.dataset,
                                                 cfg.canvas, cfg.clutter)))
    x, y = x.numpy(), y.numpy()
    n = len(y)
    T = int(cfg.num_glimpses)
    locs, pred, patches = run_model(model, x, T, args.random_seed, cfg.eval_std)
    g, k, s = int(cfg.patch_size), int(cfg.num_patches), int(cfg.glimpse_scale)
    out = args.out or os.path.join("plots", model_name(cfg))
    imgs = x[:, 0]
    titles = [f"true {y[i]}  pred {pred[i]}" for i in range(n)]
    colors = ["#0a8a0a" if pred[i] == y[i] else "#d00000" for i in range(n)]
    acc = f"{int((pred == y).sum())}/{n} right, "
    frames = render_frames(imgs, locs, g, k, s, titles, colors, header=acc)
    written = write_animation(frames, os.path.join(out, "glimpses"), args.frame_ms)
    written.append(render_strips(imgs, locs, g, k, s, os.path.join(out, "glimpses.png"),
                                 titles, colors))
    j = min(max(args.retina_image, 0), n - 1)
    written.append(render_retina(imgs[j], locs[:, j], patches[:, j], g, k, s,
                                 os.path.join(out, "retina.png"),
                                 header=f"test image {j} (true {y[j]}, pred {pred[j]}): "))
    return written


def search_records(model, cfg, loader, seed):
    """Run the checkpoint's model once over a test loader (one trajectory per image, the
    draws main.py tests with at --random_seed `seed`). Returns numpy arrays: the digits'
    centres [N, 2] and the fixations [T, N, 2] in pixels (column, row), whether each digit was
    found (model.SearchMeter.found) and classified right [N]."""
    import paddle
    from model import SearchMeter, rollout_loss, seeded_batches
    T = int(cfg.num_glimpses)
    out = {"centres": [], "fixations": [], "found": [], "correct": []}
    with paddle.no_grad():
        for x, y, l_0, noise, c in seeded_batches(model, loader, T, 1, seed):
            ep = rollout_loss(model, x, y, T, l_0=l_0, noise=noise, std=cfg.eval_std)
            fixations = model.fixation_pixels(x, ep.locs)
            for key, value in (("centres", c), ("fixations", fixations),
                               ("found", SearchMeter.found(SearchMeter.offsets(fixations, c))),
                               ("correct", ep.log_probas.argmax(1) == y)):
                out[key].append(value.numpy())
    return [np.concatenate(v, axis=1 if k == "fixations" else 0) for k, v in out.items()]


def plot_search(args):
    """Where the digit was against how the model did: test error and the share of images
    found (a fixation within model.FOUND_RADIUS of the digit) per cell of a grid over the
    digit's centre, with the first fixation marked. Returns [png] and a one-line summary."""
    from checkpoint import load_model
    from model import FOUND_RADIUS
    from utils import model_name
    model, cfg = load_model(args.search)
    if cfg.dataset == "mnist":
        raise RamError(f"{args.search} is a 28x28 MNIST model, whose digits all sit in the "
                       "middle; the search map needs a translated or cluttered checkpoint")
    loader = data_loader.get_test_loader(args.data_dir, 500, cfg.dataset, cfg.canvas,
                                         cfg.clutter)
    centres, fixations, found, correct = search_records(model, cfg, loader, args.random_seed)
    found = found.astype(bool)
    lo, hi, cells = 14.0, cfg.canvas - 14.0, args.grid   # digit centres lie in [14, canvas-14]
    edges = np.linspace(lo, hi + 1e-6, cells + 1)
    col = np.clip(np.digitize(centres[:, 0], edges) - 1, 0, cells - 1)
    row = np.clip(np.digitize(centres[:, 1], edges) - 1, 0, cells - 1)
    count = np.zeros((cells, cells))
    np.add.at(count, (row, col), 1)
    with np.errstate(invalid="ignore"):
        maps = {}
        for key, value in (("test error (%)", 1 - correct), ("found (% of images)", found)):
            total = np.zeros((cells, cells))
            np.add.at(total, (row, col), value.astype(float))
            maps[key] = 100.0 * total / count
    first = fixations[0]
    fig = _figure(9.0, 4.4)
    extent = (lo, hi, hi, lo)   # image axes: row 0 at the top
    for i, (label, grid) in enumerate(maps.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(grid, extent=extent, cmap="magma_r" if i == 0 else "viridis",
                       vmin=0, vmax=None if i == 0 else 100)
        ax.scatter(first[:, 0], first[:, 1], s=6, c="#00c8ff", alpha=0.3, linewidths=0,
                   label="first fixations")
        ax.set_xlim(0, cfg.canvas)
        ax.set_ylim(cfg.canvas, 0)
        ax.set_xlabel("digit centre, column (px)")
        ax.set_ylabel("digit centre, row (px)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.colorbar(im, ax=ax, fraction=0.046)
    def err(images):
        return f"{100 * (1 - correct[images].mean()):.2f}%" if images.any() else "-"
    summary = (f"{model_name(cfg)}, seed {args.random_seed}: test error "
               f"{100 * (1 - correct.mean()):.2f}%, found {100 * found.mean():.1f}% (within "
               f"{FOUND_RADIUS} px), error of found {err(found)}, of the others {err(~found)}")
    fig.suptitle(summary, fontsize=8)
    fig.tight_layout()
    out = args.out or os.path.join("plots", model_name(cfg))
    if os.path.isdir(out) or not args.out:   # a folder, as in checkpoint mode
        out = os.path.join(out, "search.png")
    _save(fig, out)
    return [out], summary


# ---------------------------------------------------------------------------- your own images
def prepare_image(path, size):
    """An image file as the model's input: grey, size x size, light digit on a dark ground
    (MNIST's polarity), intensities 0..255 as data_loader.pixels. Returns (x [1, 1, size, size]
    float32, note) where note says what was done; one RamError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        raise RamError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise RamError(f"{path}: the file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            if mode in ("I;16", "I;16B", "I;16L", "I") and im.getextrema()[1] > 255:
                raise RamError(f"{path}: a 16-bit image; save it with 8 bits per channel")
            grey = im.convert("L") if mode != "I" else im.point(lambda v: v).convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RamError(f"{path}: not a readable image ({type(e).__name__})") from None
    if min(w, h) < 4:
        raise RamError(f"{path}: {w}x{h} pixels is too small to show a digit; use at least 4x4")
    a = np.asarray(grey.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    notes = [f"{w}x{h} {mode} -> {size}x{size} grey"]
    if border.mean() > 127.5:  # dark digit on a light ground: MNIST's is the other way round
        a = 255 - a
        notes.append("inverted (dark on light)")
    return data_loader.pixels(a[None]), ", ".join(notes)


def classify_images(args):
    """--image: classify each file with a checkpoint (--ckpt) or an exported model
    (--inference_dir), print one line per image and draw its glimpses. Returns (written,
    failures)."""
    from utils import model_name
    if args.inference_dir:
        import export
        predictor, described = export.predictor(args.inference_dir)
        cfg = argparse.Namespace(**described["config"])

        def run(x, l_0):
            return export.run(predictor, x, None if cfg.first_fixation == "learned" else l_0)
    else:
        import paddle
        from checkpoint import load_model
        model, cfg = load_model(args.ckpt)

        def run(x, l_0):
            with paddle.no_grad():
                learned = cfg.first_fixation == "learned"
                out = model.predict(paddle.to_tensor(x), None if learned else paddle.to_tensor(l_0))
            return [o.numpy() for o in out]
    g, k, s = int(cfg.patch_size), int(cfg.num_patches), int(cfg.glimpse_scale)
    out_root = args.out or os.path.join("plots", model_name(cfg) + "_images")
    written, failures = [], 0
    for path in args.image:
        try:
            x, note = prepare_image(path, int(cfg.canvas))
        except RamError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        # The first fixation at the image centre (unless the model learned its own).
        probs, locs = run(x, np.zeros((1, 2), np.float32))
        probs = probs[0]
        digit = int(probs.argmax())
        print(f"{path}: {digit} (p={probs[digit]:.3f}; {note})")
        stem = os.path.join(out_root, os.path.splitext(os.path.basename(path))[0])
        title = [f"pred {digit} (p={probs[digit]:.2f})"]
        frames = render_frames(x[:, 0], locs, g, k, s, title, ["#0a8a0a"])
        written += write_animation(frames, stem + "_glimpses", args.frame_ms)
        written.append(render_strips(x[:, 0], locs, g, k, s, stem + "_path.png", title,
                                     ["#0a8a0a"]))
    return written, failures


# ---------------------------------------------------------------------------- learning curves
def read_metrics(path):
    """The per-epoch records of a run (<logs_dir>/<name>_metrics.jsonl, one JSON object per
    epoch; a resumed run repeats some epochs: the last record of each counts), sorted by
    epoch: a dict of arrays epoch, lr, std, train_loss, train_acc, val_loss, val_acc, secs
    (the epoch's), total_min (the run's by its end), found (NaN where a record has no value)."""
    if not os.path.isfile(path):
        raise RamError(f"metrics file {path} not found; training writes "
                       "<logs_dir>/<model_name>_metrics.jsonl")
    rows = {}
    for record in json_records(path, "an epoch record (JSON with an 'epoch'); pass a "
                                     "<name>_metrics.jsonl file", "epoch"):
        rows[int(record["epoch"])] = record
    if not rows:
        raise RamError(f"{path} has no epoch records; train for at least one epoch first")
    epochs = sorted(rows)
    out = {"epoch": np.array(epochs)}
    for key in METRICS:
        out[key] = np.array([float(rows[e].get(key, np.nan)) for e in epochs])
    return out


def plot_curves(metrics_file, out_png):
    """Three panels (accuracy, loss, learning rate and policy std per epoch) from a run's
    metrics records -> out_png, and a fourth with the share of digits found when the records
    have it.

    Raises RamError when the file is missing or has no records. Returns out_png.
    """
    c = read_metrics(metrics_file)
    ep = c["epoch"]
    marker = "o" if len(ep) <= 30 else None
    fig = _figure(12, 3.6)
    ax_acc, ax_loss, ax_lr = fig.subplots(1, 3)
    ax_acc.plot(ep, c["train_acc"], marker=marker, ms=3, label="train")
    ax_acc.plot(ep, c["val_acc"], marker=marker, ms=3, label="validation")
    best = int(np.nanargmax(c["val_acc"])) if np.isfinite(c["val_acc"]).any() else 0
    ax_acc.plot(ep[best], c["val_acc"][best], "*", color="red", ms=11,
                label=f"best {c['val_acc'][best]:.2f}% (epoch {ep[best]})")
    ax_acc.set_ylabel("accuracy (%)")
    ax_loss.plot(ep, c["train_loss"], marker=marker, ms=3, label="train")
    ax_loss.plot(ep, c["val_loss"], marker=marker, ms=3, label="validation")
    ax_loss.set_ylabel("hybrid loss")
    ax_lr.plot(ep, c["lr"], marker=marker, ms=3, color="purple", drawstyle="steps-post")
    if (c["lr"] > 0).all():
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    std = c["std"]
    if np.isfinite(std).any() and np.nanmin(std) < np.nanmax(std):  # only a schedule is news
        ax_std = ax_lr.twinx()
        ax_std.plot(ep, std, color="teal", drawstyle="steps-post", label="policy std")
        ax_std.set_yscale("log")
        ax_std.set_ylabel("location policy std", color="teal")
    for ax, title in ((ax_acc, "accuracy"), (ax_loss, "loss"), (ax_lr, "learning rate")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_loss.legend(fontsize=8, loc="upper right")
    if np.isfinite(c["found"]).any():
        ax_found = ax_acc.twinx()
        ax_found.plot(ep, c["found"], color="grey", lw=0.8, label="found (validation)")
        ax_found.set_ylabel("digits found (%)", color="grey")
    name = os.path.basename(metrics_file).replace("_metrics.jsonl", "")
    fig.suptitle(f"{name}: {len(ep)} epochs", fontsize=11)
    fig.tight_layout()
    _save(fig, out_png)
    return out_png


def text_table(rows):
    """Rows of strings as aligned text: the first column left-aligned, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))) for r in rows)


def compare_runs(metrics_files, out_png, every=50, window=5, target_err=1.12, since=0,
                 minutes=False):
    """Validation accuracy, digits found and lr of several runs (their metrics records) side by
    side -> out_png, and a text table: each run's best validation accuracy (epoch) and the
    share of digits found there; the first epoch whose validation error is <= target_err, with
    the run's logged minutes by then (time to accuracy); and at every `every`-th epoch (or
    minute) the validation accuracy, and the share found where recorded, averaged over the
    run's last `window` epochs by then (one epoch is too noisy to compare runs by). Labels are
    the paths as given.

    since: only the epochs after it count, for runs that branch from one checkpoint there.
    minutes: the axis and the marks are the minutes since each run's first counted epoch began
    rather than epochs: runs whose epochs cost differently (--rollouts) compare at equal time.
    Returns (out_png, table)."""
    runs = []
    for path in metrics_files:
        c = read_metrics(path)
        keep = c["epoch"] > since
        if not keep.any():
            raise RamError(f"{path} has no epoch after --since {since} (its last is "
                           f"{int(c['epoch'][-1])})")
        c = {k: v[keep] for k, v in c.items()}
        c["x"] = elapsed_minutes(c, path) if minutes else c["epoch"]
        runs.append((path, c))
    unit = " min" if minutes else ""
    last = max(float(c["x"][-1]) for _, c in runs)
    start = 0 if minutes else since   # marks from the branch on
    marks = list(range(start + every, int(last) + 1, every))
    rows = [["run", "best val (epoch)", "found", f"err<={target_err:g}% at"]
            + [f"@{m}{unit}" for m in marks]]
    labels = short_labels([path for path, _ in runs])
    have_found = any(np.isfinite(c["found"]).any() for _, c in runs)
    fig = _figure(12, 4.2)
    ax_acc, *ax_found, ax_lr = fig.subplots(1, 3 if have_found else 2)
    for (path, c), label in zip(runs, labels):
        x, val, found = c["x"], c["val_acc"], c["found"]
        best = int(np.nanargmax(val))
        row = [path, f"{val[best]:.2f} ({c['epoch'][best]})", _pct(found[best]), "-"]
        reached = np.flatnonzero(100.0 - val <= target_err + 1e-9)
        if reached.size:
            i = reached[0]
            spent = c["total_min"][i]
            row[3] = f"{c['epoch'][i]}" + (f" ({spent:g} min)" if np.isfinite(spent) else "")
        for m in marks:
            near = np.flatnonzero(x <= m)[-window:]
            if not near.size or x[-1] < m:   # nothing by then, or the run ended before
                row.append("-")
                continue
            cell = f"{np.nanmean(val[near]):.2f}"
            if np.isfinite(found[near]).any():
                cell += f"/{np.nanmean(found[near]):.1f}"
            row.append(cell)
        rows.append(row)
        line, = ax_acc.plot(x, val, lw=0.8, label=f"{label}: best {val[best]:.2f}")
        if ax_found:
            ax_found[0].plot(x, found, lw=0.8, color=line.get_color())
        ax_lr.plot(x, c["lr"], color=line.get_color(), drawstyle="steps-post")
    top = max(np.nanmax(c["val_acc"]) for _, c in runs)
    ax_acc.set_ylim(max(0.0, top - 5), min(100.0, top + 0.5))  # the part where runs differ
    ax_acc.set_ylabel("validation accuracy (%)")
    if ax_found:
        ax_found[0].set_ylabel("digits found, validation (%)")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    for ax in (ax_acc, *ax_found, ax_lr):
        ax.set_xlabel(f"minutes since epoch {since}" if minutes else "epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="lower right")   # one legend: the panels share the colours
    fig.tight_layout()
    _save(fig, out_png)
    return out_png, text_table(rows)


def short_labels(paths):
    """The paths without the start and the end they all share (logs/tuning/a/x_metrics.jsonl,
    logs/tuning/b/x_metrics.jsonl -> a, b), where that leaves each one a name."""
    if len(paths) < 2:
        return [os.path.basename(p).replace("_metrics.jsonl", "") for p in paths]
    head = len(os.path.commonprefix(paths))
    tail = len(os.path.commonprefix([p[::-1] for p in paths]))
    labels = [p[head:len(p) - tail] for p in paths]
    return labels if all(labels) and len(set(labels)) == len(labels) else list(paths)


def _pct(value):
    return f"{value:.1f}" if np.isfinite(value) else "-"


def elapsed_minutes(c, path):
    """Minutes from the start of a run's first record to the end of each: its logged total
    minus the total before the first epoch began (that epoch's own seconds, or else the typical
    epoch's where old records lack them)."""
    total = c["total_min"]
    if not np.isfinite(total).all():
        raise RamError(f"{path} has epochs without logged minutes (total_min); compare it by "
                       "epoch instead")
    first = c["secs"][0] / 60
    if not np.isfinite(first):
        first = float(np.median(np.diff(total))) if len(total) > 1 else 0.0
    return total - (total[0] - first)


# ---------------------------------------------------------------------------- results
# The tasks of the paper's Tables 1a, 1b and 2 (6 glimpses), by our model name, with the test
# error (%) the NIPS 2014 paper reports for each.
PAPER_ERR = {"ram_6_8x8_1": ("28x28", 1.12),
             "ram_6_12x12_3_translated60": ("translated 60x60", 1.22),
             "ram_6_12x12_3_cluttered60": ("cluttered 60x60", 4.08),
             "ram_6_12x12_4_cluttered100": ("cluttered 100x100", 8.31)}
REFERENCE_RECORDS = "eval_reference.jsonl"   # the reference checkpoint, a 28x28 model


def read_test_records(path):
    """{M: [test error (%) of each test]} from a file of test records (the <name>_test.jsonl
    that main.py --is_train=False appends to, one JSON object per test). Tests at another
    --eval_std than the checkpoint's are left out: the table's protocol is the default std."""
    errors = {}
    for record in json_records(path, "a test record (JSON with M and error)", "M", "error"):
        if record.get("default_std", True):
            errors.setdefault(int(record["M"]), []).append(float(record["error"]))
    return errors


def json_records(path, what, *keys):
    """The JSON objects of a JSON-lines file, each with `keys`; one RamError naming the first
    line that is not `what`."""
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                for key in keys:
                    float(record[key])
            except (ValueError, KeyError, TypeError):
                raise RamError(f"{path} line {n} is not {what}") from None
            records.append(record)
    return records


def plot_results(log_dir, out_png):
    """Grouped bars, one group per task whose test records eval_<model_name>.jsonl are in
    log_dir: the paper's test error, the reference checkpoint's (28x28, from
    eval_reference.jsonl), ours with one trajectory (M = 1) and ours with M = 10, each a mean
    over the seeds the records hold, on a log scale. Returns (out_png, the same numbers as a
    text table)."""
    tasks = [(name, task, paper) for name, (task, paper) in PAPER_ERR.items()
             if os.path.isfile(os.path.join(log_dir, f"eval_{name}.jsonl"))]
    if not tasks:
        raise RamError(f"{log_dir} holds no test records eval_<model_name>.jsonl of the paper's "
                       f"tasks ({', '.join(PAPER_ERR)}); pass the folder that does, e.g. "
                       "--results logs/pretrained")
    reference = os.path.join(log_dir, REFERENCE_RECORDS)
    reference = read_test_records(reference).get(1) if os.path.isfile(reference) else None
    series = {"paper (NIPS 2014)": [], "reference checkpoint": [], "ours, M = 1": [],
              "ours, M = 10": []}
    for name, _, paper in tasks:
        ours = read_test_records(os.path.join(log_dir, f"eval_{name}.jsonl"))
        series["paper (NIPS 2014)"].append(paper)
        series["reference checkpoint"].append(
            float(np.mean(reference)) if reference and name == "ram_6_8x8_1" else np.nan)
        for m in (1, 10):
            series[f"ours, M = {m}"].append(float(np.mean(ours[m])) if m in ours else np.nan)
    fig = _figure(1.9 * len(tasks) + 2.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(tasks))
    width = 0.8 / len(series)
    colors = ("#7f7f7f", "#bcbd22", "#1f77b4", "#9ecae1")
    for i, ((label, values), color) in enumerate(zip(series.items(), colors)):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label,
                      color=color)
        for bar, v in zip(bars, values):
            if np.isfinite(v):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_yscale("log")  # the tasks' errors span more than a factor of ten
    ax.set_xticks(x)
    ax.set_xticklabels([task for _, task, _ in tasks])
    ax.set_ylabel("test error (%)")
    ax.set_title("RAM, 6 glimpses: test error on MNIST tasks", fontsize=10)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, out_png)
    rows = [["task"] + list(series)] + [
        [task] + ["-" if not np.isfinite(v[i]) else f"{v[i]:.2f}" for v in series.values()]
        for i, (_, task, _) in enumerate(tasks)]
    return out_png, text_table(rows)


# ---------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(
        description="Plot RAM's glimpses (from the trainer's dumps or by running a checkpoint) "
                    "and its learning curves. Writes GIF + PNG (and MP4 if ffmpeg is on PATH).",
        epilog="Examples: python plot_glimpses.py --plot_dir plots/ram_6_8x8_1/ --epoch 10 | "
               "python plot_glimpses.py --ckpt ckpt/pretrained/ram_6_8x8_1_model_best.pdparams "
               "| python plot_glimpses.py --curves logs/pretrained/ram_6_8x8_1_metrics.jsonl | "
               "python plot_glimpses.py --compare logs/pretrained/ram_6_8x8_1_metrics.jsonl "
               "logs/tuning/ram_6_8x8_1_runH_metrics.jsonl")
    mode = p.add_argument_group("mode (exactly one)")
    mode.add_argument("--plot_dir", help="dump mode: the folder holding g_<epoch>.p and "
                      "l_<epoch>.p (plots/<model_name>/); the outputs go there too")
    mode.add_argument("--ckpt", help="checkpoint mode: run this checkpoint on test images "
                      "(or, with --image, on your own)")
    mode.add_argument("--image", nargs="+", metavar="FILE",
                      help="classify these image files (any size, grey or colour) with --ckpt "
                           "or --inference_dir; writes each one's glimpse animation and path")
    mode.add_argument("--inference_dir", help="with --image: the model written by main.py "
                      "--export instead of a checkpoint")
    mode.add_argument("--curves", metavar="METRICS",
                      help="learning curves of a run's metrics (<logs_dir>/<name>_metrics.jsonl)")
    mode.add_argument("--compare", metavar="METRICS", nargs="+",
                      help="validation accuracy, digits found and lr of these runs' metrics "
                           "side by side, with a table")
    mode.add_argument("--target_err", type=float, default=1.12,
                      help="compare: the validation error (%%) whose first epoch and time the "
                           "table reports (default: the paper's 1.12%%)")
    mode.add_argument("--since", type=int, default=0, metavar="EPOCH",
                      help="compare: only the epochs after EPOCH (runs that branch from one "
                           "checkpoint there; default: all)")
    mode.add_argument("--minutes", action="store_true",
                      help="compare: by the minutes since each run's first compared epoch "
                           "began, not by epoch: runs whose epochs cost differently compare at "
                           "equal time")
    mode.add_argument("--every", type=int, default=50,
                      help="compare: a table column every this many epochs (or minutes; "
                           "default: 50)")
    mode.add_argument("--search", metavar="CKPT",
                      help="run this translated or cluttered checkpoint on the test set and map "
                           "the test error and the share of digits found against where the "
                           "digit lies (plots/<model_name>/search.png)")
    mode.add_argument("--results", metavar="DIR",
                      help="test error per task, the paper's beside ours, from the test "
                           "records eval_<model_name>.jsonl in DIR (e.g. logs/pretrained)")
    d = p.add_argument_group("dump mode")
    d.add_argument("--epoch", type=int, default=None,
                   help="the epoch whose dumps to plot (default: the latest in --plot_dir)")
    d.add_argument("--patch_size", type=int, default=None,
                   help="retina g for the boxes (default: <ckpt_dir>/<model_name>_params.json, "
                        "else 8)")
    d.add_argument("--num_patches", type=int, default=None, help="retina k (default: json, else 1)")
    d.add_argument("--glimpse_scale", type=int, default=None,
                   help="retina s (default: json, else 1)")
    d.add_argument("--ckpt_dir", default="./ckpt", help="where <model_name>_params.json is")
    c = p.add_argument_group("checkpoint mode")
    c.add_argument("--data_dir", default="./data", help="folder with the MNIST idx files")
    c.add_argument("--num_images", type=int, default=9, help="# first test images to show")
    c.add_argument("--random_seed", type=int, default=1,
                   help="seed of the first fixation and the location noise")
    c.add_argument("--grid", type=int, default=8,
                   help="search: cells per side of the grid over the digit's position")
    c.add_argument("--retina_image", type=int, default=0,
                   help="which of the shown images retina.png details (0-based)")
    p.add_argument("--out", default=None,
                   help="checkpoint mode: output folder (default plots/<model_name>); curves: "
                        "output PNG (default plots/<name>_curves.png); compare: output PNG "
                        "(default plots/compare.png); results: output PNG (default "
                        "plots/results.png); search: output PNG, or a folder for search.png "
                        "(default plots/<model_name>/search.png)")
    p.add_argument("--frame_ms", type=int, default=FRAME_MS, help="ms per animation frame")
    return p


@one_line_errors(RamError, FileNotFoundError)
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_cpu_env()  # before Paddle loads: the same math kernels, so the same counts, as main.py
    if args.image and not (args.ckpt or args.inference_dir):
        parser.error("--image needs a model: --ckpt FILE or --inference_dir DIR")
    if args.inference_dir and not args.image:
        parser.error("--inference_dir goes with --image FILE ...")
    modes = [m for m in ("plot_dir", "ckpt", "curves", "compare", "results", "search")
             if getattr(args, m)]
    if args.image:
        modes = ["image"]
    if len(modes) != 1:
        parser.error("pass exactly one of --plot_dir (with --epoch), --ckpt, --curves, "
                     "--compare, --results or --search")
    if args.grid < 1:
        parser.error(f"--grid must be >= 1 (got {args.grid})")
    if args.every < 1:
        parser.error(f"--every must be >= 1 (got {args.every})")
    if args.frame_ms < 1:
        parser.error(f"--frame_ms must be >= 1 (got {args.frame_ms})")
    if args.out:
        check_not_pretrained(args.out if args.ckpt else os.path.dirname(args.out) or ".", "--out")
    if args.curves:
        stem = os.path.basename(args.curves).replace("_metrics.jsonl", "")
        written = [plot_curves(args.curves,
                               args.out or os.path.join("plots", stem + "_curves.png"))]
    elif args.compare:
        png, table = compare_runs(args.compare, args.out or os.path.join("plots",
                                                                          "compare.png"),
                                  every=args.every, target_err=args.target_err,
                                  since=args.since, minutes=args.minutes)
        print(table)
        written = [png]
    elif args.results:
        png, table = plot_results(args.results, args.out or os.path.join("plots", "results.png"))
        print(table)
        written = [png]
    elif args.search:
        written, summary = plot_search(args)
        print(summary)
    elif args.image:
        written, failures = classify_images(args)
        report_written(written)
        return 2 if failures else 0
    elif args.ckpt:
        written = plot_checkpoint(args)
    else:
        written = plot_dump(args)
    report_written(written)
    return 0


def report_written(paths):
    """One line per file written, with its size."""
    for path in paths:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        print(f"[*] wrote {path} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    sys.exit(main())
