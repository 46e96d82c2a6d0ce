"""Non-finite steps in a real run: batches with a NaN or an inf pixel are skipped, counted and
logged, and the run ends as one in which those steps made no update (weights, Adam moments,
EMA and RNG counts: the tiny run has drop path, so a count a skipped step advanced would change
every later step); a learning rate that blows up stops the run with exit code 3, every
checkpoint on disk holding finite weights. The runs are the tiny run of tests/train/
test_train_cli.py (12 steps), whose compiled programs the session's cache holds."""

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
BAD_STEPS = {4: np.nan, 7: np.inf}  # of 12: 4 epochs of 3 steps


def _poison_steps(monkeypatch, bad: dict) -> None:
    """The batch of each step in `bad` gets one pixel of its value (a test hook: no config
    reaches it)."""
    place, calls = loop.device_batch, itertools.count(1)

    def device_batch(batch, mesh, *keys):
        step = next(calls)
        if step in bad:
            batch = dict(batch, video=batch["video"].copy())
            batch["video"][0, 1, 2, 3, 0] = bad[step]
        return place(batch, mesh, *keys)

    monkeypatch.setattr(loop, "device_batch", device_batch)


def _skip_steps(monkeypatch, bad) -> None:
    """The steps in `bad` make no update: the train step is not called for their batches."""
    make, calls = steps.make_train_step, itertools.count(1)

    def make_train_step(*args, **kwargs):
        train_step = make(*args, **kwargs)

        def maybe(state, batch):
            if next(calls) not in bad:
                return train_step(state, batch)
            nan = jnp.float32(jnp.nan)
            return state, dict(loss=nan, accuracy=nan, grad_norm=nan, lr=nan, nonfinite=1)

        return maybe

    monkeypatch.setattr(steps, "make_train_step", make_train_step)


def test_nan_and_inf_batches_are_skipped_as_steps_without_update(
    motion_dataset, tmp_path, monkeypatch, capsys
):
    # Saves at epoch ends and one validation, at the end: fewer pauses, the same programs.
    overrides = tiny_overrides(motion_dataset, train__save_every=0, train__eval_every=4)
    config = load_config(DEMO, overrides)
    poisoned, skipped = str(tmp_path / "poisoned"), str(tmp_path / "skipped")
    with monkeypatch.context() as patch:
        _poison_steps(patch, BAD_STEPS)
        loop.train(config, poisoned)
    out = capsys.readouterr().out
    for step in BAD_STEPS:
        assert f"step {step}: non-finite loss, gradients or weights: update skipped" in out
    with open(os.path.join(poisoned, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert [r["nonfinite"] for r in train] == [int(r["step"] in BAD_STEPS) for r in train]
    with monkeypatch.context() as patch:
        _skip_steps(patch, BAD_STEPS)
        loop.train(config, skipped)
    (got, step), (want, _) = final_state(config, poisoned), final_state(config, skipped)
    assert step == 12
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
