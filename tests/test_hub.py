"""hubconf.py: a shipped RAM from paddle.hub in two lines, and its predict() on the first 1,000
test images, against the README's table."""
import re
from pathlib import Path

import paddle
import pytest

import data_loader
from utils import RamError

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"mnist": ("mnist", 28), "translated60": ("translated", 60),
            "cluttered60": ("cluttered", 60), "cluttered100": ("cluttered", 100)}


def readme_errors():
    """{task: error (%)} from the README's table of predict() on the first 1,000 test images."""
    text = (ROOT / "README.md").read_text()
    return {task: float(err) for task, err in
            re.findall(r"^\| `(\w+)` \| ([\d.]+) \|$", text, re.M) if task in DATASETS}


def test_the_readme_lists_every_task():
    assert set(readme_errors()) == set(DATASETS)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(DATASETS))
def test_hub_loads_each_shipped_model_and_predict_gives_the_readme_error(task, mnist_dir):
    model = paddle.hub.load(str(ROOT), "ram", source="local", task=task)
    dataset, side = DATASETS[task]
    assert model.image_size == side and not model.training
    x, y = next(iter(data_loader.get_test_loader(str(mnist_dir), 1000, dataset, side)))
    with paddle.no_grad():
        probs, fixations = model.predict(x)
    assert probs.shape == [1000, 10] and fixations.shape == [6, 1000, 2]
    assert float(paddle.abs(probs.sum(1) - 1).max()) < 1e-5
    assert float(paddle.abs(fixations).max()) <= 1.0
    errors = int((probs.argmax(1) != y).astype("int32").sum())
    assert errors / 10 == readme_errors()[task]


def test_untrained_and_unknown_tasks():
    fresh = paddle.hub.load(str(ROOT), "ram", source="local", task="mnist", pretrained=False)
    trained = paddle.hub.load(str(ROOT), "ram", source="local", task="mnist")
    assert fresh.state_dict().keys() == trained.state_dict().keys()
    assert not all(bool((fresh.state_dict()[k] == trained.state_dict()[k]).all())
                   for k in fresh.state_dict())
    with pytest.raises(RamError, match="unknown task 'svhn'; choose one of mnist"):
        paddle.hub.load(str(ROOT), "ram", source="local", task="svhn")
