"""paddle.hub entry point: a trained RAM in two lines of Python.

    import paddle
    model = paddle.hub.load("path/to/this/clone", "ram", source="local", task="cluttered100")
    probs, fixations = model.predict(images)   # images [N, 1, 100, 100], intensities 0..255

`task` names one of the shipped models (TASKS); pretrained=False gives the same architecture
with fresh weights. See RecurrentAttention.predict for the call.
"""
import os
import sys

dependencies = ["paddle", "numpy"]

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# task -> the shipped model's name (ckpt/pretrained/<name>_model_best.pdparams), its images'
# side, and its test error with one trajectory (README).
TASKS = {"mnist": "ram_6_8x8_1",
         "translated60": "ram_6_12x12_3_translated60",
         "cluttered60": "ram_6_12x12_3_cluttered60",
         "cluttered100": "ram_6_12x12_4_cluttered100"}


def ram(task="mnist", pretrained=True):
    """The Recurrent Attention Model of one of the paper's tasks, in eval mode.

    task: mnist (28x28 digits, 6 glimpses of 8x8), translated60, cluttered60 (60x60 canvases)
    or cluttered100 (100x100), each 6 glimpses of 12x12 at 3 or 4 scales. pretrained: the
    shipped weights (True) or fresh ones. Classify with model.predict(x): x [N, 1, H, W]
    float32 pixel intensities 0..255, a light digit on a dark ground, H = W = the task's
    side (model.image_size) -> (class probabilities [N, 10], fixations [T, N, 2] in [-1, 1],
    (column, row)), one deterministic trajectory per image (the policy at its mean).
    """
    import checkpoint
    from config import checkpoint_config
    from model import build_model
    from utils import RamError
    if task not in TASKS:
        raise RamError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    file = os.path.join(_ROOT, "ckpt", "pretrained", TASKS[task] + "_model_best.pdparams")
    if pretrained:
        model, config = checkpoint.load_model(file)
    else:
        config = checkpoint_config(checkpoint.stored_config(checkpoint.load(file)))
        model = build_model(config)
        model.eval()
    model.image_size = config.canvas
    return model
