"""Convert RAM checkpoints between PyTorch and Paddle, and check that both compute the same.

The PyTorch side is the widely used layout of kevinzakka/recurrent-visual-attention: a dict
{model_state, optim_state, epoch, best_valid_acc} whose model_state holds sensor.fc1..fc4,
rnn.i2h/h2h, locator.fc/fc_lt, classifier.fc and baseliner.fc. The Paddle side is this
project's checkpoint (see trainer.py), which main.py tests or resumes with --ckpt.

    python align.py --torch_ckpt ram.pth.tar --out ram.pdparams [--check]
    python align.py --to_torch --paddle_ckpt ram.pdparams --out ram.pth.tar [--check]
    python align.py --check --torch_ckpt ram.pth.tar --paddle_ckpt ram.pdparams
    python align.py --check --torch_ckpt ram.pth.tar          (in memory, writes nothing)

The two layouts differ only in the Linear weights: PyTorch stores them [out, in], Paddle
[in, out]. They are transposed, biases copied bit for bit. The optimizer state is not carried
over (the frameworks key Adam's moments differently): a resumed run starts a fresh optimizer.

--check runs the network twice on the same images, first location l_0 and location noise:
the Paddle model of model.py (step by step and through model.rollout) and an independent
PyTorch implementation written below from the paper's equations (it never calls Paddle). It
prints the largest |paddle - torch| of h_t, l_t, b_t, log_pi (over all glimpses) and of the
final log-probabilities, and fails above --tol (1e-5). Both run in float64 by default: in
float32, trained weights alone make the log-probabilities differ by ~1e-5 between the two
frameworks' kernels, while a transposed weight or a shifted patch differs by far more.

PyTorch is needed here only (pip install -r requirements-dev.txt); it is imported lazily.
Exit status: 0 done, 1 the check found a difference, 2 bad input (one line per problem).
"""
import argparse
import json
import os
import pickle
import sys
import warnings

import numpy as np

from config import check_config, checkpoint_config, parser as ram_parser, str2bool
from data_loader import NUM_CLASSES
from utils import ARCH_KEYS, RamError, model_name, one_line_errors

TORCH_MISSING = ("align.py needs PyTorch, which training and testing do not: "
                 "pip install -r requirements-dev.txt")
CHANNELS = 1  # what model.build_model builds: greyscale MNIST
OUTPUTS = ("h_t", "l_t", "b_t", "log_pi", "log_probas")
# The LSTM core's gates: Paddle's i2h/h2h columns are (i, f, o, c~), torch.nn.LSTMCell's rows
# (i, f, g, o) with g = c~. Swapping the last two blocks maps either order to the other.
GATE_ORDER = (0, 1, 3, 2)


def build_parser():
    p = argparse.ArgumentParser(
        prog="align.py",
        description="Convert RAM checkpoints between PyTorch (kevinzakka/recurrent-visual-"
                    "attention layout) and this project's Paddle format; --check compares "
                    "both frameworks' outputs on the same inputs.",
        epilog="Examples: `python align.py --torch_ckpt ram.pth.tar --out ram.pdparams "
               "--check`, then `python main.py --is_train=False --ckpt ram.pdparams`; "
               "`python align.py --to_torch --paddle_ckpt ram.pdparams --out ram.pth.tar`.")
    flag = dict(type=str2bool, nargs="?", const=True, default=False)
    f = p.add_argument_group("Files")
    f.add_argument("--torch_ckpt", help="PyTorch checkpoint to convert (or to check)")
    f.add_argument("--paddle_ckpt", help="Paddle checkpoint to convert with --to_torch "
                                         "(or to check)")
    f.add_argument("--out", help="the converted checkpoint to write")
    f.add_argument("--to_torch", **flag, help="convert --paddle_ckpt to PyTorch "
                                              "(default: --torch_ckpt to Paddle)")
    f.add_argument("--params_json", help="the <name>_params.json saved beside the PyTorch "
                                         "checkpoints: its architecture, when the checkpoint "
                                         "stores none")
    f.add_argument("--trust_pickle", **flag,
                   help="load a PyTorch file that holds Python objects besides tensors "
                        "(unsafe: only for files you trust)")
    a = p.add_argument_group(
        "Architecture", "default: the config stored in the checkpoint(s) or --params_json, "
                        "else main.py's defaults; a flag given here wins")
    for key in ARCH_KEYS:  # the same flags as main.py's, with its types and choices
        action = _ram_action(key)
        if action is not None:
            a.add_argument("--" + key, type=action.type, choices=action.choices, default=None,
                           help=f"as in main.py (its default: {action.default})")
    c = p.add_argument_group("Check")
    c.add_argument("--check", **flag, help="compare the Paddle and PyTorch networks' outputs")
    c.add_argument("--data_dir", default=None,
                   help="check on the first --batch_size test images (MNIST, or its "
                        "--dataset variant) of this folder (default: random images)")
    c.add_argument("--batch_size", type=int, default=8, help="# images of the check")
    c.add_argument("--seed", type=int, default=0, help="seed of the images, l_0 and noise")
    c.add_argument("--tol", type=float, default=1e-5, help="largest |paddle - torch| allowed")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the check: float64 (default) leaves only the layout and "
                        "the semantics to differ; float32 also shows rounding (about 1e-5 on "
                        "trained weights: raise --tol)")
    return p


# ---------------------------------------------------------------- architecture
def _ram_action(key):
    """main.py's argparse action of --key (its type, choices and default), or None."""
    return ram_parser._option_string_actions.get("--" + key)


def _coerce(key, value, source):
    """A stored architecture value as the type of main.py's flag (JSON may store 8.0 for 8)."""
    action = _ram_action(key)
    if action is None:
        return value
    kind = action.type or (type(action.default) if action.default is not None else str)
    try:
        if kind in (int, float):
            number = float(value)
            if kind is int and not number.is_integer():
                raise ValueError
            value = kind(number)
        else:
            value = kind(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise RamError(f"{source}: {key}={value!r} is not a valid --{key}") from None
    if action.choices and value not in action.choices:
        raise RamError(f"{source}: {key}={value!r} is not one of {', '.join(action.choices)}")
    return value


def _stored_config(meta):
    cfg = meta.get("config") if isinstance(meta, dict) else None
    if isinstance(cfg, argparse.Namespace):
        cfg = vars(cfg)
    return cfg if isinstance(cfg, dict) else {}


def read_params_json(path):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise RamError(f"cannot read --params_json {path} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise RamError(f"--params_json {path} is not JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(cfg, dict):
        raise RamError(f"--params_json {path} must hold one JSON object of flags")
    return cfg


def resolve_arch(args, sources):
    """The architecture: explicit flags, else the stored configs (which must agree), else the
    defaults of main.py. sources: [(label, config dict)]. Returns (arch dict, notes)."""
    arch, notes = {}, []
    for key in ARCH_KEYS:
        found = [(label, _coerce(key, cfg[key], label))
                 for label, cfg in sources if cfg.get(key) is not None]
        given = getattr(args, key, None)
        if given is not None:
            arch[key] = given
            notes += [f"[!] --{key} {given} overrides {key}={v} stored in {label}"
                      for label, v in found if v != given]
        elif found:
            if len({v for _, v in found}) > 1:
                raise RamError(f"{key} differs between " + " and ".join(
                    f"{label} ({v})" for label, v in found) + f"; pass --{key} to choose")
            arch[key] = found[0][1]
        else:
            arch[key] = ram_parser.get_default(key)
    flags = ram_parser.parse_args([])
    for key, value in arch.items():
        setattr(flags, key, value)
    if arch["core"] not in CORES:
        raise RamError(f"core {arch['core']!r} has no PyTorch counterpart here; align.py knows "
                       f"{', '.join(CORES)}")
    flags = check_config(flags)  # raises on impossible values; settles dependent values
    return {key: getattr(flags, key) for key in ARCH_KEYS}, notes


def describe(arch):
    return (model_name(argparse.Namespace(**arch)) + " ("
            + ", ".join(f"{k}={arch[k]}" for k in arch) + ")")


def image_side(arch):
    """The side of the network's input images: 28 for MNIST, else the canvas."""
    return arch["canvas"] if arch.get("dataset", "mnist") != "mnist" else 28


def paddle_model(arch):
    """Our network of this architecture, built by model.build_model as main.py builds it
    (flags the architecture leaves out take their defaults)."""
    from model import build_model
    return build_model(checkpoint_config(arch))


# ---------------------------------------------------------------- layouts
CORES = ("rnn", "irnn", "lstm")
LSTM_KEYS = {"rnn.i2h.weight": "rnn.lstm.weight_ih", "rnn.i2h.bias": "rnn.lstm.bias_ih",
             "rnn.h2h.weight": "rnn.lstm.weight_hh", "rnn.h2h.bias": "rnn.lstm.bias_hh"}


def is_linear_weight(key, shape):
    return key.endswith(".weight") and len(shape) == 2


def _gates(a, axis):
    """a with its four gate blocks along `axis` reordered by GATE_ORDER."""
    blocks = np.split(a, 4, axis=axis)
    return np.concatenate([blocks[i] for i in GATE_ORDER], axis=axis)


def to_torch_layout(arrays, arch):
    """Paddle arrays -> PyTorch's: Linear weights [in, out] -> [out, in]; an LSTM core as a
    torch.nn.LSTMCell `rnn.lstm` (weight_ih, weight_hh, bias_ih, bias_hh, gates i, f, g, o)."""
    out = {}
    for k, a in arrays.items():
        a = np.ascontiguousarray(a.T) if is_linear_weight(k, a.shape) else a.copy()
        if arch["core"] == "lstm" and k in LSTM_KEYS:
            k, a = LSTM_KEYS[k], _gates(a, 0)
        out[k] = a
    return out


def to_paddle_layout(arrays, arch):
    """The inverse of to_torch_layout."""
    back = {v: k for k, v in LSTM_KEYS.items()} if arch["core"] == "lstm" else {}
    out = {}
    for k, a in arrays.items():
        if k in back:
            k, a = back[k], _gates(a, 0)
        out[k] = np.ascontiguousarray(a.T) if is_linear_weight(k, a.shape) else a.copy()
    return out


def validate(arrays, expected, layout, path, arch):
    """Raise one RamError naming every missing, unexpected or misshapen key, one per line.

    arrays are in `layout` ('torch' or 'paddle'); expected holds the Paddle model's shapes.
    """
    if layout == "torch":
        zeros = {k: np.zeros(s, np.float32) for k, s in expected.items()}
        want = {k: list(a.shape) for k, a in to_torch_layout(zeros, arch).items()}
    else:
        want = dict(expected)
    other = "paddle" if layout == "torch" else "torch"
    problems = [f"missing key {k} (the model needs {layout} shape {s})"
                for k, s in want.items() if k not in arrays]
    for k, a in arrays.items():
        shape = list(a.shape)
        if k not in want:
            problems.append(f"unexpected key {k} (shape {shape})")
        elif shape != want[k]:
            hint = (f"; transposed: a {other}-layout file?"
                    if len(shape) == 2 and shape[::-1] == want[k] else "")
            problems.append(f"wrong shape for {k}: {shape} in the file, the model needs "
                            f"{want[k]} ({layout} layout{hint})")
        elif not np.issubdtype(a.dtype, np.floating):
            problems.append(f"wrong dtype for {k}: {a.dtype}, expected floating point")
    if problems:
        raise RamError(f"{path} does not fit the architecture {describe(arch)}:\n"
                       + "\n".join("  " + p for p in problems)
                       + "\n  pass the architecture flags it was trained with (or --params_json)")
    cast = [k for k, a in arrays.items() if a.dtype != np.float32]
    if cast:
        print(f"[!] {path}: {len(cast)} tensors are not float32 ({arrays[cast[0]].dtype}); "
              "cast to float32")
    return {k: arrays[k].astype(np.float32, copy=False) for k in want}


# ---------------------------------------------------------------- files
def _need_file(path, flag):
    if not os.path.isfile(path):
        raise RamError(f"{flag} {path}: no such file")


def _number(value, kind, default):
    try:
        return kind(value)
    except (TypeError, ValueError):
        return default


def read_torch(path, trust=False):
    """A PyTorch checkpoint -> ({key: array [out, in]}, the whole dict)."""
    import torch
    _need_file(path, "--torch_ckpt")
    hint = " (a Paddle file? convert those with --to_torch --paddle_ckpt)" \
        if path.endswith(".pdparams") else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError:
        if trust:
            raise RamError(f"cannot read {path}: not a PyTorch checkpoint{hint}") from None
        raise RamError(f"{path}: the safe loader refused it: it is not a PyTorch checkpoint"
                       f"{hint}, or it holds Python objects besides tensors (if you trust the "
                       "file, pass --trust_pickle)") from None
    except Exception as e:
        raise RamError(f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}){hint}"
                       ) from None
    if isinstance(obj, dict) and "model_state" in obj:
        state, meta = obj["model_state"], obj
    elif isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        state, meta = obj, {}  # a bare state dict
    else:
        raise RamError(f"{path} is not a RAM checkpoint: expected a dict with 'model_state' "
                       "(or a bare state dict of tensors)")
    if not isinstance(state, dict):
        raise RamError(f"{path}: 'model_state' is a {type(state).__name__}, not a state dict")
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise RamError(f"{path}: model_state entries that are not tensors:\n"
                       + "\n".join(f"  {k}" for k in bad))
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    arrays = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.dtype not in (torch.float16, torch.float32, torch.float64):
            v = v.float()  # bfloat16 and friends have no NumPy dtype
        arrays[k] = v.numpy()
    return arrays, meta


def read_paddle(path):
    """A Paddle checkpoint of ours -> ({key: array [in, out]}, the whole dict)."""
    import checkpoint
    _need_file(path, "--paddle_ckpt")
    state = checkpoint.load(path)
    if not isinstance(state["model_state"], dict):
        raise RamError(f"{path}: 'model_state' is not a state dict")
    arrays = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
              for k, v in state["model_state"].items()}
    return arrays, state


def write_paddle(arrays, meta, arch, out):
    """Our checkpoint format, loadable by main.py --ckpt (which adopts the stored config)."""
    import paddle
    import checkpoint
    checkpoint.save({
        "epoch": _number(meta.get("epoch"), int, 0),
        "model_state": {k: paddle.to_tensor(a) for k, a in arrays.items()},
        "optim_state": {},
        "best_valid_acc": _number(meta.get("best_valid_acc"), float, 0.0),
        "counter": 0,
        "elapsed": 0.0,
        "config": dict(arch),
    }, out)


def write_torch(arrays, meta, arch, out):
    """The kevinzakka layout plus our architecture under 'config'; written atomically."""
    from collections import OrderedDict

    import torch
    state = {
        "epoch": _number(meta.get("epoch"), int, 0),
        "model_state": OrderedDict((k, torch.from_numpy(np.array(a))) for k, a in arrays.items()),
        "optim_state": {},
        "best_valid_acc": _number(meta.get("best_valid_acc"), float, 0.0),
        "config": dict(arch),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, out)


# ---------------------------------------------------------------- the PyTorch network
def torch_network(arch):
    """RAM in plain PyTorch, with the reference's parameter names (an LSTM core as an
    nn.LSTMCell), written from the paper's equations and independent of modules.py (the
    retina pads and slices one image at a time where ours gathers)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    g, k, s = arch["patch_size"], arch["num_patches"], arch["glimpse_scale"]
    h_g, h_l = arch["glimpse_hidden"], arch["loc_hidden"]
    hidden, std, lstm = arch["hidden_size"], arch["std"], arch["core"] == "lstm"

    def retina(x, l):
        """phi [B, k*C*g*g]: k patches of side g*s**i around l, pooled to g x g."""
        B, C, H, W = x.shape
        centre_col = torch.floor(0.5 * ((l[:, 0] + 1.0) * W)).long().tolist()
        centre_row = torch.floor(0.5 * ((l[:, 1] + 1.0) * H)).long().tolist()
        scales = []
        for i in range(k):
            size = g * s ** i
            # Zero padding of `size` on every side holds any patch whose centre is in [0, W].
            padded = F.pad(x, (size, size, size, size))
            crops = []
            for b in range(B):
                top = centre_row[b] - size // 2 + size
                left = centre_col[b] - size // 2 + size
                crops.append(padded[b, :, top:top + size, left:left + size])
            patch = torch.stack(crops)
            if i > 0:
                patch = F.avg_pool2d(patch, size // g)
            scales.append(patch)
        return torch.cat(scales, dim=1).reshape(B, -1)

    class TorchRAM(nn.Module):
        def __init__(self):
            super().__init__()
            self.sensor = nn.ModuleDict({
                "fc1": nn.Linear(k * g * g * CHANNELS, h_g), "fc2": nn.Linear(2, h_l),
                "fc3": nn.Linear(h_g, h_g + h_l), "fc4": nn.Linear(h_l, h_g + h_l)})
            self.rnn = nn.ModuleDict({"lstm": nn.LSTMCell(h_g + h_l, hidden)} if lstm else {
                "i2h": nn.Linear(h_g + h_l, hidden), "h2h": nn.Linear(hidden, hidden)})
            self.locator = nn.ModuleDict({"fc": nn.Linear(hidden, hidden // 2),
                                          "fc_lt": nn.Linear(hidden // 2, 2)})
            self.classifier = nn.ModuleDict({"fc": nn.Linear(hidden, NUM_CLASSES)})
            self.baseliner = nn.ModuleDict({"fc": nn.Linear(hidden, 1)})

        def policy(self, h_t, noise):
            """l_t (clipped), log_pi, b_t of the Gaussian policy and the baseline at h_t."""
            mu = torch.tanh(self.locator["fc_lt"](F.relu(self.locator["fc"](h_t))))
            l_t = mu + std * noise
            log_pi = torch.distributions.Normal(mu, std).log_prob(l_t).sum(dim=1)
            return torch.clamp(l_t, -1.0, 1.0), log_pi, self.baseliner["fc"](h_t).squeeze(1)

        def step(self, x, l_prev, state, noise):
            """One glimpse -> (h_t, c_t), l_t, b_t, log_pi, log-probabilities."""
            sensor = self.sensor
            what = sensor["fc3"](F.relu(sensor["fc1"](retina(x, l_prev))))
            where = sensor["fc4"](F.relu(sensor["fc2"](l_prev)))
            g_t = F.relu(what + where)
            if lstm:
                state = self.rnn["lstm"](g_t, state)
            else:
                state = (F.relu(self.rnn["i2h"](g_t) + self.rnn["h2h"](state[0])), None)
            l_t, log_pi, b_t = self.policy(state[0], noise)
            return state, l_t, b_t, log_pi, F.log_softmax(self.classifier["fc"](state[0]), dim=1)

    return TorchRAM()


# ---------------------------------------------------------------- the check
def check_inputs(args, arch):
    """Images [B, 1, H, W] (pixel intensities, as main.py feeds them), l_0 [B, 2],
    noise [P + T, B, 2] (P = 1 for a learned first fixation, its own policy step)."""
    import data_loader
    rng = np.random.RandomState(args.seed)
    if args.batch_size < 1:
        raise RamError(f"--batch_size must be >= 1 (got {args.batch_size})")
    side = image_side(arch)
    if args.data_dir:
        dataset = arch.get("dataset", "mnist")
        if dataset == "mnist":
            images = data_loader.load_mnist(args.data_dir, "test")[0][:args.batch_size]
            x = data_loader.pixels(images)
        else:  # the test split as main.py builds it
            extra = {k: arch[k] for k in ("dataset", "canvas", "clutter") if k in arch}
            loader = data_loader.get_test_loader(args.data_dir, args.batch_size, **extra)
            x = next(iter(loader))[0].numpy()
        what = f"the first {len(x)} {dataset} test images of {args.data_dir}"
    else:
        images = rng.randint(0, 256, size=(args.batch_size, side, side)).astype(np.uint8)
        x = data_loader.pixels(images)
        what = f"{len(x)} random {side}x{side} images"
    B, steps = len(x), first_steps(arch) + arch["num_glimpses"]
    l_0 = rng.uniform(-1.0, 1.0, size=(B, 2)).astype(np.float32)
    noise = rng.standard_normal(size=(steps, B, 2)).astype(np.float32)
    dtype = np.dtype(args.dtype)
    return x.astype(dtype), l_0.astype(dtype), noise.astype(dtype), what


def first_steps(arch):
    """1 when the first fixation is a policy step of its own (learned), else 0."""
    return int(arch.get("first_fixation", "random") == "learned")


def first_fixation(arch, l_0, B):
    """The given first fixation of a random one, the centre, or None (learned: drawn)."""
    kind = arch.get("first_fixation", "random")
    return l_0 if kind == "random" else np.zeros((B, 2), l_0.dtype) if kind == "centre" else None


def _empty(n):
    return {name: [None] * n for name in OUTPUTS}


def torch_trace(arch, arrays, x, l_0, noise):
    """Per-step outputs of the PyTorch network: {name: [array or None per policy step]}
    (a learned first fixation is step 0, with its l_t, b_t and log_pi). It reads the images
    normalised, as the reference's data pipeline feeds them."""
    import torch
    import data_loader
    x = (x / 255.0 - data_loader.MEAN) / data_loader.STD
    net = torch_network(arch)
    net.load_state_dict({k: torch.from_numpy(np.array(a, dtype=x.dtype))
                         for k, a in arrays.items()}, strict=True)
    net.to(torch.float64 if x.dtype == np.float64 else torch.float32).eval()
    P, T = first_steps(arch), arch["num_glimpses"]
    out = _empty(P + T)
    with torch.no_grad():
        x, noise = torch.from_numpy(x), torch.from_numpy(noise)
        zeros = torch.zeros(x.shape[0], arch["hidden_size"], dtype=x.dtype)
        state = (zeros, zeros.clone())
        l_t = first_fixation(arch, l_0, x.shape[0])
        if l_t is None:
            l_t, log_pi, b_t = net.policy(zeros, noise[0])
            for name, value in (("l_t", l_t), ("b_t", b_t), ("log_pi", log_pi)):
                out[name][0] = value.numpy()
        else:
            l_t = torch.from_numpy(l_t)
        for t in range(T):
            state, l_t, *rest = net.step(x, l_t, state, noise[P + t])
            for name, value in zip(OUTPUTS, (state[0], l_t, *rest)):
                out[name][P + t] = value.numpy()
    return out


def paddle_trace(arch, arrays, x, l_0, noise):
    """The same from model.py: per-step outputs of the one-glimpse forward, plus rollout's."""
    import paddle
    model = paddle_model(arch)
    model.to(dtype=str(x.dtype))
    model.set_state_dict({k: paddle.to_tensor(a.astype(x.dtype)) for k, a in arrays.items()})
    model.eval()
    P, T = first_steps(arch), arch["num_glimpses"]
    out = _empty(P + T)
    l_first = first_fixation(arch, l_0, x.shape[0])
    with paddle.no_grad():
        xp, noise_p = paddle.to_tensor(x), paddle.to_tensor(noise)
        state = paddle.zeros([x.shape[0], model.rnn.state_size], dtype=str(x.dtype))
        if l_first is None:
            h_0 = model.rnn.hidden(state)
            log_pi, l_t = model.locator(h_0, noise_p[0])
            for name, value in (("l_t", l_t), ("b_t", model.baseliner(h_0).squeeze(1)),
                                ("log_pi", log_pi)):
                out[name][0] = value.numpy()
        else:
            l_t = paddle.to_tensor(l_first)
        for t in range(T):
            state, l_t, b_t, log_pi = model(xp, l_t, state, noise=noise_p[P + t])
            for name, value in zip(OUTPUTS, (model.rnn.hidden(state), l_t, b_t, log_pi)):
                out[name][P + t] = value.numpy()
        out["log_probas"][-1] = model.classifier(model.rnn.hidden(state)).numpy()
        log_probas, log_pis, baselines, locs = model.rollout(
            xp, T, l_0=None if l_first is None else paddle.to_tensor(l_first), noise=noise_p)
    rollout = {"log_probas": log_probas.numpy(), "log_pi": log_pis.numpy(),
               "b_t": baselines.numpy(), "locs": locs.numpy()}
    return out, rollout


def compare(theirs, ours, rollout, steps):
    """{name: [max |paddle - torch| per policy step]} (nan where an output has no value)."""
    def diff(a, b):
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    P = steps - rollout["locs"].shape[0]
    diffs = {name: [float("nan")] * steps for name in OUTPUTS}
    for t in range(steps):
        for name in OUTPUTS:
            if ours[name][t] is not None:
                diffs[name][t] = diff(ours[name][t], theirs[name][t])
        rolled = {"log_pi": rollout["log_pi"][:, t], "b_t": rollout["b_t"][:, t]}
        following = t + 1 - P  # the glimpse that looks where step t's l_t points
        if 0 <= following < rollout["locs"].shape[0]:
            rolled["l_t"] = rollout["locs"][following]
        if t == steps - 1:
            rolled["log_probas"] = rollout["log_probas"]
        for name, value in rolled.items():
            diffs[name][t] = max(diffs[name][t], diff(value, theirs[name][t]))
    return diffs


def run_check(arch, torch_arrays, paddle_arrays, args, torch_from, paddle_from):
    x, l_0, noise, what = check_inputs(args, arch)
    T = len(noise)  # policy steps: the glimpses, and a learned first fixation's
    theirs = torch_trace(arch, torch_arrays, x, l_0, noise)
    ours, rollout = paddle_trace(arch, paddle_arrays, x, l_0, noise)
    diffs = compare(theirs, ours, rollout, T)
    first = {"random": f"the same l_0 {list(l_0.shape)}", "centre": "l_0 at the centre",
             "learned": "the learned first fixation"}[arch.get("first_fixation", "random")]
    print(f"[*] check in {args.dtype}: {what}, {arch['core']} core, {arch['num_glimpses']} "
          f"glimpses, {first} and location noise {list(noise.shape)} (seed {args.seed})")
    print(f"    paddle: model.py on {paddle_from}; torch: align.py's own network on {torch_from}")
    print(f"    {'output':<11} {'max |paddle - torch|':>20}  at policy step")
    failed = []
    for name in OUTPUTS:
        per_step = [d for d in diffs[name] if not np.isnan(d)]
        worst = max(per_step)
        where = int(np.nanargmax(diffs[name])) + 1
        print(f"    {name:<11} {worst:>20.3e}  {where}/{T}")
        if not worst <= args.tol:
            failed.append(name)
    agree = int((ours["log_probas"][-1].argmax(1) == theirs["log_probas"][-1].argmax(1)).sum())
    if failed:
        print(f"[!] check FAILED: {', '.join(failed)} differ by more than {args.tol:g} "
              f"(same predicted class for {agree}/{len(x)} images)")
        return False
    print(f"[*] check passed: every difference <= {args.tol:g}; same predicted class for "
          f"{agree}/{len(x)} images")
    return True


# ---------------------------------------------------------------- main
def _check_modes(args):
    if args.to_torch:
        if not args.paddle_ckpt:
            raise RamError("--to_torch converts a Paddle checkpoint: pass --paddle_ckpt FILE")
        if args.torch_ckpt:
            raise RamError("--to_torch reads --paddle_ckpt and writes --out; drop --torch_ckpt "
                           "(to compare two files: --check --torch_ckpt T --paddle_ckpt P)")
        if not (args.out or args.check):
            raise RamError("--to_torch: pass --out FILE (and/or --check)")
    elif args.out:
        if not args.torch_ckpt:
            raise RamError("--out: pass the PyTorch checkpoint to convert with --torch_ckpt "
                           "(or --to_torch --paddle_ckpt for the other direction)")
        if args.paddle_ckpt:
            raise RamError("--out with both --torch_ckpt and --paddle_ckpt: pass one of them "
                           "(--to_torch to convert the Paddle one)")
    elif not args.check:
        raise RamError("nothing to do: pass --out FILE to convert, and/or --check "
                       "(see python align.py --help)")
    elif not (args.torch_ckpt or args.paddle_ckpt):
        raise RamError("--check needs --torch_ckpt and/or --paddle_ckpt")
    if args.out:
        for src in (args.torch_ckpt, args.paddle_ckpt):
            if src and os.path.abspath(src) == os.path.abspath(args.out):
                raise RamError(f"--out {args.out} would overwrite its input; choose another file")


def run(args):
    _check_modes(args)
    import paddle
    paddle.set_device("cpu")

    sources, torch_arrays, paddle_arrays, torch_meta, paddle_meta = [], None, None, {}, {}
    if args.params_json:
        sources.append((args.params_json, read_params_json(args.params_json)))
    if args.torch_ckpt:
        torch_arrays, torch_meta = read_torch(args.torch_ckpt, args.trust_pickle)
        sources.append((args.torch_ckpt, _stored_config(torch_meta)))
    if args.paddle_ckpt:
        paddle_arrays, paddle_meta = read_paddle(args.paddle_ckpt)
        sources.append((args.paddle_ckpt, _stored_config(paddle_meta)))
    arch, notes = resolve_arch(args, sources)
    for note in notes:
        print(note)
    print(f"[*] architecture {describe(arch)}")
    expected = {k: list(v.shape) for k, v in paddle_model(arch).state_dict().items()}
    if torch_arrays is not None:
        torch_arrays = validate(torch_arrays, expected, "torch", args.torch_ckpt, arch)
    if paddle_arrays is not None:
        paddle_arrays = validate(paddle_arrays, expected, "paddle", args.paddle_ckpt, arch)
    n_weights = sum(is_linear_weight(k, s) for k, s in expected.items())

    torch_from, paddle_from = args.torch_ckpt, args.paddle_ckpt
    if args.out and not args.to_torch:
        write_paddle(to_paddle_layout(torch_arrays, arch), torch_meta, arch, args.out)
        print(f"[*] wrote {args.out}: {len(expected)} tensors, {n_weights} Linear weights "
              "transposed [out, in] -> [in, out], optimizer state not carried over; "
              f"test it with: python main.py --is_train=False --ckpt {args.out}")
        paddle_arrays, paddle_from = read_paddle(args.out)[0], args.out  # check what was written
    elif args.out:
        write_torch(to_torch_layout(paddle_arrays, arch), paddle_meta, arch, args.out)
        print(f"[*] wrote {args.out}: {len(expected)} tensors, {n_weights} Linear weights "
              "transposed [in, out] -> [out, in], optimizer state not carried over")
        torch_arrays, torch_from = read_torch(args.out)[0], args.out
    elif paddle_arrays is None:
        paddle_arrays, paddle_from = to_paddle_layout(torch_arrays, arch), "its conversion in memory"
    elif torch_arrays is None:
        torch_arrays, torch_from = to_torch_layout(paddle_arrays, arch), "its conversion in memory"

    if args.check and not run_check(arch, torch_arrays, paddle_arrays, args,
                                    torch_from, paddle_from):
        if args.out:
            print(f"[!] {args.out} was written but does not compute what its source does")
        return 1
    return 0


@one_line_errors()
def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import torch  # noqa: F401  (only to fail early with one line)
    except ImportError:
        print(TORCH_MISSING, file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
