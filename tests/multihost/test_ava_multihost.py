"""`vmp eval` of the AVA detector on 2 real processes (`vmp launch`, 4 CPU devices each): each
validation keyframe is predicted once, process 0 alone writes one report, and its frame-mAP is
the 1-process evaluation's of the same checkpoint (issue 41: "as `vmp eval` does for
classification", tests/multihost/test_multihost.py)."""

import collections
import contextlib
import csv
import io
import json
import os
import re

import numpy as np
import pytest

from tests.ava_sets import config_overrides, generated_ava
from tests.multihost.test_multihost import _launch
from vmp_jax import cli
from vmp_jax.data import ava_inputs
from vmp_jax.engine import checkpoint
from vmp_jax.engine.state import Trainer, flat_params
from vmp_jax.experiment import REPO_ROOT, load_config

CONFIG = str(REPO_ROOT / "configs" / "ava_demo.py")
# tests/train/test_ava_train.py's tiny detector, its evaluation frames at half the size
TINY = [
    "model.num_frames=2", "model.embed_dim=64", "model.depth=2", "ava.max_boxes=4",
    "ava.test_size=(48,64)", "eval.batch_size=8",
]  # fmt: skip
REPORT = {"detections.csv", "ap_per_class.csv", "metrics.json"}


def _overrides(root: str) -> list[str]:
    return config_overrides(TINY, root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """3 val videos of 7 s: 12 keyframes less 2 excluded, over 2 batches of 8."""
    return generated_ava(tmp_path_factory, videos=4, seconds=7, val_fraction=0.75, seed=2)


@pytest.fixture
def checkpoint_dir(dataset, tmp_path_factory, seed) -> str:
    """A workdir with one step of the tiny detector, its head drawn with a large spread so
    that each box gets its own scores (an initial head scores every box about alike)."""
    config = load_config(CONFIG, _overrides(dataset))
    trainer = Trainer.from_config(config)  # 8 devices: the init `vmp eval` compiles again
    state = trainer.init()
    params = flat_params(trainer.parts(state).model)
    kernel = params[("head", "kernel")]
    rng = np.random.default_rng(seed)
    params[("head", "kernel")] = rng.normal(0, 0.5, kernel.shape).astype(kernel.dtype)
    workdir = str(tmp_path_factory.mktemp("run"))
    store = checkpoint.Checkpoints(workdir, async_save=False)
    store.save(1, trainer.with_params(state, params))
    store.close()
    return workdir


def _rows(out: str) -> list[list[str]]:
    with open(os.path.join(out, "detections.csv")) as f:
        return list(csv.reader(f))


def test_two_process_ava_eval_predicts_each_keyframe_once_and_writes_one_report(
    dataset, checkpoint_dir, tmp_path
):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    argv = ["eval", "--config", CONFIG, *_overrides(dataset), "--checkpoint", checkpoint_dir]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*argv, "--out", one]) == 0  # 1 process of 8 devices
    run = _launch(2, ["vmp", *argv, "--out", two])
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    # one report, from process 0
    assert os.listdir(two) and set(os.listdir(two)) == REPORT
    assert re.findall(r"^\[(\d)\] frame-mAP@0.5 ", out, re.M) == ["0"], out
    assert re.findall(r"^\[(\d)\] wrote (\w+):", out, re.M) == [
        ("0", "detections"), ("0", "ap_per_class"), ("0", "metrics")
    ], out  # fmt: skip
    # each keyframe once: its boxes once per evaluated action, every keyframe of the split
    clips = ava_inputs.open_clips(load_config(CONFIG, _overrides(dataset)), "val")
    assert len(clips) > 8  # more than one batch: both processes predicted keyframes
    rows = _rows(two)
    actions = {r[6] for r in rows}
    per_keyframe = collections.Counter((r[0], int(r[1])) for r in rows)
    boxes = {kf.key: len(clips.boxes(kf)[0]) for kf in clips.keyframes}
    assert per_keyframe == {key: n * len(actions) for key, n in boxes.items()}
    assert len({tuple(r[:7]) for r in rows}) == len(rows)  # no (keyframe, box, action) twice
    # the 1-process evaluation's rows and frame-mAP
    expected = _rows(one)
    assert [r[:7] for r in rows] == [r[:7] for r in expected]
    np.testing.assert_allclose(
        np.array([r[7] for r in rows], float), np.array([r[7] for r in expected], float),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    metrics = [json.load(open(os.path.join(d, "metrics.json"))) for d in (one, two)]  # noqa: SIM115
    assert metrics[0]["keyframes"] == metrics[1]["keyframes"] == len(clips)
    assert metrics[1]["mAP"] == pytest.approx(metrics[0]["mAP"], abs=1e-6)
