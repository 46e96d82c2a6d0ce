"""The kept best checkpoint is ranked by the task's own metric ("top1" for a classifier, "mAP"
for the AVA detector), saved under that name; a workdir whose earlier steps carry the legacy
"top1" (every run before, AVA's frame-mAP included) resumes and ranks old and new steps alike."""

import jax.numpy as jnp
import pytest

from tests.tiny_run import complete_steps
from vmp_jax.engine.checkpoint import Checkpoints
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.train import loop


def _kept(workdir: str) -> list[int]:
    return sorted(complete_steps(workdir))


def test_each_task_saves_its_own_metric_under_its_name():
    ava = load_config(str(REPO_ROOT / "configs" / "ava_demo.py"))
    demo = load_config(str(REPO_ROOT / "configs" / "demo.py"))
    assert loop.metric_name(ava) == "mAP" and loop.metric_name(demo) == "top1"
    val = {"mAP": 0.4, "keyframes": 10, "detections": 30, "skipped": 0}
    assert loop._best_metric(val, "mAP") == {"mAP": 0.4}
    assert loop._best_metric({"top1": 0.7, "top5": 0.9}, "top1") == {"top1": 0.7}
    assert loop._best_metric(None, "mAP") is None


def _save(checkpoints: Checkpoints, values: dict, metrics) -> None:
    for step, value in values.items():
        checkpoints.save(step, {"w": jnp.full(2, float(step))}, metrics=metrics(value))
        checkpoints.wait()


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_the_best_step_survives_a_resume(tmp_path, request, where, seed):
    """The steps' metrics are written with them (step/metrics/) and read back by the next run:
    a resumed run keeps the best step of the run before it until a better one comes."""
    if where == "bucket":
        request.getfixturevalue("gcs")
        workdir = f"gs://vmp-test/best-{seed}"
    else:
        workdir = str(tmp_path)
    first = Checkpoints(workdir, keep=1, async_save=False, metric="mAP")
    _save(first, {1: 0.2, 2: 0.6, 3: 0.1}, lambda v: {"mAP": v})
    first.close()
    assert _kept(workdir) == [2, 3]
    resumed = Checkpoints(workdir, keep=1, async_save=False, metric="mAP")
    _save(resumed, {4: 0.5}, lambda v: {"mAP": v})
    assert _kept(workdir) == [2, 4]
    _save(resumed, {5: 0.7}, lambda v: {"mAP": v})
    assert _kept(workdir) == [5]
    resumed.close()


# Steps of older workdirs: their ranking figure under the legacy name "top1" (an AVA run's
# frame-mAP too), or no metrics on disk at all (runs before metrics were written with steps).
LEGACY = {"top1": lambda v: {"top1": v}, "none": lambda v: None}


@pytest.mark.parametrize("written", sorted(LEGACY))
def test_an_ava_run_resumes_in_a_legacy_workdir(tmp_path, written):
    workdir = str(tmp_path)
    old = Checkpoints(workdir, keep=3, async_save=False)
    _save(old, {1: 0.2, 2: 0.6, 3: 0.1}, LEGACY[written])
    old.close()
    resumed = Checkpoints(workdir, keep=1, async_save=False, metric="mAP")
    assert resumed.latest_step() == 3
    _save(resumed, {4: 0.5}, lambda v: loop._best_metric({"mAP": v, "keyframes": 4}, "mAP"))
    # an old step's top-1 ranks with the new frame-mAPs; a step without metrics is not a best
    assert _kept(workdir) == ([2, 4] if written == "top1" else [4])
    _save(resumed, {5: 0.7}, lambda v: {"mAP": v})
    assert _kept(workdir) == [5]
    resumed.close()
