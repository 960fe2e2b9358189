"""The trained model as a Paddle Inference model, and the predictor that runs one.

    python main.py --is_train=False --ckpt FILE --export DIR

writes DIR/inference.json + inference.pdiparams (paddle.jit.save of the whole episode, the
glimpse loop unrolled, the policy at its mean: RecurrentAttention.predict) and
DIR/ram_config.json describing its inputs and outputs. `predictor(DIR)` loads it for
paddle.inference on the CPU; `plot_glimpses.py --inference_dir DIR --image FILE` uses it.
"""
import json
import os

import numpy as np
import paddle.nn as nn

import checkpoint
from utils import ARCH_KEYS, RamError, check_not_pretrained, ensure_dir


class Predict(nn.Layer):
    """RecurrentAttention.predict as a layer's forward, which paddle.jit.save writes:
    forward(x [N, C, H, W] pixel intensities 0..255, l_0 [N, 2]) -> (probabilities
    [N, classes], fixations [T, N, 2]). A model with a learned first fixation takes x alone."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        model.eval()

    def forward(self, x, l_0=None):
        return self.model.predict(x, l_0)


def export(ckpt, out_dir):
    """Write the checkpoint `ckpt` as a Paddle Inference model into out_dir, with
    ram_config.json describing its input. Returns [(file, bytes)]."""
    import paddle
    from paddle.static import InputSpec
    model, config = checkpoint.load_model(ckpt)
    check_not_pretrained(out_dir, "--export")
    ensure_dir(out_dir, "--export")
    spec = [InputSpec([None, 1, config.canvas, config.canvas], "float32", "x")]
    if config.first_fixation != "learned":
        spec.append(InputSpec([None, 2], "float32", "l_0"))
    try:
        paddle.jit.save(Predict(model), os.path.join(out_dir, "inference"), input_spec=spec)
        described = {"checkpoint": os.path.abspath(ckpt), "inputs": [s.name for s in spec],
                     "image_size": config.canvas,
                     "pixels": "intensities 0..255, digit light on dark",
                     "outputs": ["probas [N, 10]", "locs [T, N, 2]"],
                     "config": {k: getattr(config, k) for k in ARCH_KEYS}}
        with open(os.path.join(out_dir, "ram_config.json"), "w") as f:
            json.dump(described, f, indent=2)
    except OSError as e:
        raise RamError(f"cannot write the inference model in {out_dir}: {e.strerror}") from None
    files = sorted(os.listdir(out_dir))
    return [(os.path.join(out_dir, f), os.path.getsize(os.path.join(out_dir, f))) for f in files]


def predictor(model_dir):
    """(predictor, ram_config dict) of a model written by export(), on the CPU."""
    from paddle import inference
    meta = os.path.join(model_dir, "ram_config.json")
    if not os.path.isfile(meta):
        raise RamError(f"{model_dir} holds no exported RAM model (no ram_config.json); write one "
                       "with python main.py --is_train=False --ckpt FILE --export DIR")
    with open(meta) as f:
        described = json.load(f)
    cfg = inference.Config(os.path.join(model_dir, "inference.json"),
                           os.path.join(model_dir, "inference.pdiparams"))
    cfg.disable_gpu()
    # oneDNN's graph passes fuse the pooled patches' transposes into an op (fused_transpose)
    # this CPU build has no kernel for; plain CPU kernels run the model.
    cfg.disable_mkldnn()
    cfg.disable_glog_info()
    return inference.create_predictor(cfg), described


def run(predictor, x, l_0=None):
    """Run a predictor on x [N, 1, H, W] (and l_0 [N, 2]) numpy arrays; returns
    (probabilities [N, classes], fixations [T, N, 2])."""
    feeds = {"x": x, "l_0": l_0}
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name]))
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
