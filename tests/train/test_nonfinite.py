"""Non-finite steps in a real run: a batch with a NaN pixel is skipped, counted and logged, and
the run ends as one in which that step made no update; a learning rate that blows up stops
the run with exit code 3, every checkpoint on disk holding finite weights."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from tests.tiny_run import as_numpy, final_state, tiny_overrides
from vmp_jax import cli
from vmp_jax.engine import checkpoint, steps
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.train import loop

DEMO = str(REPO_ROOT / "configs" / "demo.py")
BAD_STEP = 4  # of 6: 2 epochs of 3 steps


def _poison_step(monkeypatch, bad: int) -> None:
    """The batch of step `bad` gets one NaN pixel (a test hook: no config reaches it)."""
    place, calls = loop.device_batch, itertools.count(1)

    def device_batch(batch, mesh):
        if next(calls) == bad:
            batch = dict(batch, video=batch["video"].copy())
            batch["video"][0, 1, 2, 3, 0] = np.nan
        return place(batch, mesh)

    monkeypatch.setattr(loop, "device_batch", device_batch)


def _skip_step(monkeypatch, bad: int) -> None:
    """Step `bad` makes no update: the train step is not called for its batch."""
    make, calls = steps.make_train_step, itertools.count(1)

    def make_train_step(*args, **kwargs):
        train_step = make(*args, **kwargs)

        def maybe(state, batch):
            if next(calls) != bad:
                return train_step(state, batch)
            nan = jnp.float32(jnp.nan)
            return state, dict(loss=nan, accuracy=nan, grad_norm=nan, lr=nan, nonfinite=1)

        return maybe

    monkeypatch.setattr(steps, "make_train_step", make_train_step)


def test_a_nan_batch_is_skipped_as_a_step_without_update(
    motion_dataset, tmp_path, monkeypatch, capsys
):
    config = load_config(DEMO, tiny_overrides(motion_dataset, optim__epochs=2))
    poisoned, skipped = str(tmp_path / "poisoned"), str(tmp_path / "skipped")
    with monkeypatch.context() as patch:
        _poison_step(patch, BAD_STEP)
        loop.train(config, poisoned)
    out = capsys.readouterr().out
    assert f"step {BAD_STEP}: non-finite loss, gradients or weights: update skipped" in out
    with open(os.path.join(poisoned, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert [r["nonfinite"] for r in train] == [int(r["step"] == BAD_STEP) for r in train]
    with monkeypatch.context() as patch:
        _skip_step(patch, BAD_STEP)
        loop.train(config, skipped)
    (got, step), (want, _) = final_state(config, poisoned), final_state(config, skipped)
    assert step == 6
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all()


def test_a_blown_up_learning_rate_stops_the_run_with_finite_checkpoints(
    motion_dataset, tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    overrides = tiny_overrides(
        motion_dataset, optim__base_lr=1e6, optim__epochs=4, train__max_nonfinite=2
    )
    assert cli.main(["train", "--config", DEMO, *overrides, "--workdir", workdir]) == 3
    err = capsys.readouterr().err
    assert "2 non-finite steps in a row (train.max_nonfinite=2), stopped" in err
    config = load_config(DEMO, overrides)
    abstract = loop.setup(config).trainer.abstract_placed()
    saved = sorted(os.listdir(checkpoint.checkpoint_dir(workdir)), key=int)
    assert saved and f"resume from the last checkpoint, {workdir}" in err
    assert f"checkpoints/{saved[-1]}, with a lower learning rate" in err
    for step in saved:
        state, _ = checkpoint.restore_state(os.path.join(workdir, "checkpoints", step), abstract)
        for leaf in map(as_numpy, jax.tree.leaves(state)):
            assert not np.issubdtype(leaf.dtype, np.floating) or np.isfinite(leaf).all(), step


def test_max_nonfinite_must_be_positive(motion_dataset, tmp_path, capsys):
    overrides = tiny_overrides(motion_dataset, train__max_nonfinite=0)
    workdir = str(tmp_path / "run")
    assert cli.main(["train", "--config", DEMO, *overrides, "--workdir", workdir]) == 2
    assert "train.max_nonfinite must be >= 1, got 0" in capsys.readouterr().err
