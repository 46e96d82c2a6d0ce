"""The run's metrics: JSONL records and TensorBoard scalars, written without importing torch."""

import glob
import os
import struct
import subprocess
import sys

from vmp_jax.train.metrics_log import MetricsLog


def _scalars(folder: str) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every scalar in the folder's event files (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        with open(path, "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found[(value.tag, event.step)] = value.simple_value
    return found


def test_records_go_to_jsonl_and_tensorboard(tmp_path):
    log = MetricsLog(str(tmp_path))
    log.write(3, "train", {"loss": 1.5, "accuracy": 0.25})
    log.write(5, "val", {"top1": 0.75})
    log.close()
    assert log.records() == [
        {"step": 3, "split": "train", "loss": 1.5, "accuracy": 0.25},
        {"step": 5, "split": "val", "top1": 0.75},
    ]
    assert _scalars(str(tmp_path / "tensorboard")) == {
        ("train/loss", 3): 1.5,
        ("train/accuracy", 3): 0.25,
        ("val/top1", 5): 0.75,
    }


def test_a_training_process_does_not_import_torch(tmp_path):
    """torch (installed for interop) costs about 2 s to import; tensorboardX would import it."""
    code = (
        "import sys\n"
        "from vmp_jax.train.metrics_log import MetricsLog\n"
        f"MetricsLog({str(tmp_path)!r}).write(1, 'train', {{'loss': 1.0}})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import torch\n"  # and still importable afterwards
        "print(torch.tensor([2.0]).sum().item())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"
