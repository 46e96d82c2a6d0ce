"""Where training metrics go: a JSONL file and TensorBoard scalars in the workdir, and a PNG of
the loss and accuracy curves at the end. A workdir in a bucket gets the same files, written
locally and uploaded whole at a bounded rate (`storage.Mirror`)."""

import json
import logging
import os
import sys

from vmp_jax import storage

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per record to WORKDIR/metrics.jsonl (kept across resumes) and
    writes the same scalars to TensorBoard (WORKDIR/tensorboard) on the first host. For a
    workdir in a bucket both are uploaded at most every `sync_seconds` and by `sync()` (the
    train loop calls it with every checkpoint, so a resumed run finds the records up to its
    checkpoint)."""

    def __init__(self, workdir: str, *, enabled: bool = True, sync_seconds: float = 60.0):
        self.enabled = enabled
        self._writer = self._mirror = None
        if not enabled:
            return
        self._mirror = storage.Mirror(workdir, every_seconds=sync_seconds, download=(METRICS_FILE,))
        self.path = os.path.join(self._mirror.local, METRICS_FILE)
        self._writer = _summary_writer_class()(os.path.join(self._mirror.local, "tensorboard"))
        # A window of non-finite steps has a NaN loss: written as it is, without a warning.
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in metrics.items():
            self._writer.add_scalar(f"{split}/{key}", float(value), step)
        self._writer.flush()
        self._mirror.sync()

    def sync(self) -> None:
        """Uploads what changed now (a workdir in a bucket); nothing for a local one."""
        if self.enabled:
            self._mirror.sync(force=True)

    def records(self) -> list[dict]:
        if not self.enabled or not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._mirror.close()
            self._writer = None


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch. tensorboardX tries `import torch`
    only to accept torch tensors (we write floats), and that import costs about 2 s of every
    training process; where torch is installed (the interop extra), it is kept out for the
    length of tensorboardX's import and importable again afterwards."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def plot_curves(records: list[dict], path: str) -> str:
    """Train loss and train/val accuracy against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["step"] for r in train], [r["loss"] for r in train])
    left.set(xlabel="step", ylabel="train loss", title="loss")
    right.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train (batch)")
    if val:
        key, name = ("mAP", "val frame-mAP") if "mAP" in val[0] else ("top1", "val top-1")
        right.plot([r["step"] for r in val], [r[key] for r in val], "o-", label=name)
    right.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    right.legend()
    storage.save_png(figure, path, dpi=110)
    plt.close(figure)
    return path
