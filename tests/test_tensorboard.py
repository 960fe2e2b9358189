"""--use_tensorboard writes the per-epoch scalars, readable with tensorboardX's own protobuf."""
import struct

import pytest

from conftest import run_main
from config import get_config

pytestmark = pytest.mark.slow  # a training run


def read_scalars(event_file):
    """{tag: [(step, value), ...]} from a TensorBoard event file (TFRecord framing)."""
    from tensorboardX.proto import event_pb2
    data, i, out = event_file.read_bytes(), 0, {}
    while i < len(data):
        n = struct.unpack("<Q", data[i:i + 8])[0]
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4  # length, its crc, payload, its crc
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_scalars_per_epoch(tiny_data, tmp_path):
    logs = tmp_path / "logs"
    res = run_main(["--epochs", "2", "--num_glimpses", "2", "--batch_size", "64",
                    "--data_dir", tiny_data, "--ckpt_dir", tmp_path / "ckpt", "--logs_dir", logs,
                    "--plot_dir", tmp_path / "plots", "--use_tensorboard", "True"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    events = list((logs / "ram_2_8x8_1").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = read_scalars(events[0])
    assert set(scalars) == {"train/loss", "train/acc", "val/loss", "val/acc", "lr",
                            "search/found", "search/err_found", "search/err_lost",
                            "search/dist_1", "search/dist_2"}
    assert [step for step, _ in scalars["val/acc"]] == [1, 2]
    assert all(0 <= v <= 100 for _, v in scalars["val/acc"])
    assert abs(scalars["lr"][0][1] - get_config([])[0].init_lr) < 1e-9
