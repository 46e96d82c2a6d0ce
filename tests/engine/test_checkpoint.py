"""What a workdir keeps: the last `keep` checkpoints and the best by validation top-1; what a
process does when another could not read a step (tests/multihost: with 2 real processes)."""

import logging
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmp_jax.engine import checkpoint
from vmp_jax.engine.checkpoint import (
    CheckpointReadError,
    Checkpoints,
    ProcessCountError,
    checkpoint_dir,
)


def test_the_last_n_and_the_best_by_top1_are_kept(tmp_path):
    workdir = str(tmp_path)
    checkpoints = Checkpoints(workdir, keep=2, async_save=False)
    top1 = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4, 6: 0.5}  # the best is long past
    for step, value in top1.items():
        checkpoints.save(step, {"w": jnp.full(3, float(step))}, metrics={"top1": value})
    checkpoints.wait()
    kept = sorted(int(s) for s in os.listdir(checkpoint_dir(workdir)) if s.isdigit())
    assert kept == [2, 5, 6]
    best = checkpoints.manager.restore(2)["state"]
    np.testing.assert_array_equal(best["w"], np.full(3, 2.0))
    checkpoints.close()


def _two_steps(workdir: str, seed: int, steps=(1, 2)):
    """Steps 1 and 2 (or `steps`) of a small state and a Grain iterator, saved in `workdir`;
    the state's abstract form and a fresh iterator."""
    rng = np.random.default_rng(seed)
    state = {"model": {"w": jnp.asarray(rng.normal(size=4), jnp.float32)}, "optimizer": {}}
    checkpoints = Checkpoints(workdir, async_save=False)
    data = iter(grain.MapDataset.range(10).to_iter_dataset())
    for step in steps:
        next(data)
        checkpoints.save(step, jax.tree.map(lambda x: x + step, state), data)  # noqa: B023
    checkpoints.close()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    return abstract, iter(grain.MapDataset.range(10).to_iter_dataset())


def _as_process_0_of_2(monkeypatch, process_1_says: list[str]) -> None:
    """restore_latest in this process as process 0 of 2, process 1 reporting `process_1_says`
    for the steps in turn (newest first)."""
    said = list(process_1_says)
    monkeypatch.setattr(checkpoint.collect, "gather_texts", lambda text: [text, said.pop(0)])


def test_a_step_another_process_cannot_read_is_passed_over_by_this_one(tmp_path, monkeypatch, seed):
    workdir = str(tmp_path)
    abstract, data = _two_steps(workdir, seed)
    _as_process_0_of_2(monkeypatch, ["does not restore|FileNotFoundError: x is missing", "ok"])
    checkpoints, warned = Checkpoints(workdir, async_save=False), []
    state, step = checkpoints.restore_latest(abstract, data, warn=warned.append)
    checkpoints.close()
    assert step == 1 and next(data) == 1  # the iterator where step 1 left it
    assert warned == [
        f"checkpoint {checkpoint_dir(workdir)}/2 does not restore (process 1: "
        "FileNotFoundError: x is missing): moved it aside"
    ]
    assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "2"))


class _SlowRereader:
    """Process 1 of 2 rereading the steps as slowly as it may: it lists the step folders when it
    leaves a wait on every process (`collect.on_every_process`) and reads them (each step's
    files, as Orbax's reload does) only when this process, process 0, comes to the next
    collective or returns. A move of a step by process 0 in between is the race that stopped
    process 1 with "No such file or directory .../checkpoints/<step>" (tests/multihost)."""

    def __init__(self, monkeypatch, directory: str):
        self.directory, self.listed, self.missing = directory, None, []
        wait = checkpoint.collect.on_every_process

        def on_every_process(ok: bool) -> bool:
            self.read()  # the reread under way ends before process 1 can pass this wait
            result = wait(ok)
            self.listed = [s for s in os.listdir(directory) if s.isdigit()]  # then rereads
            return result

        monkeypatch.setattr(checkpoint.collect, "on_every_process", on_every_process)

    def read(self) -> None:
        for step in self.listed or []:
            if not os.path.isdir(os.path.join(self.directory, step)):
                self.missing.append(step)
        self.listed = None


def test_no_process_rereads_the_steps_while_another_moves_one_aside(tmp_path, monkeypatch, seed):
    workdir = str(tmp_path)
    abstract, data = _two_steps(workdir, seed, steps=(1, 2, 3))
    says = ["does not restore|FileNotFoundError: x is missing"] * 2 + ["ok"]
    _as_process_0_of_2(monkeypatch, says)  # 3 and 2 damaged on process 1
    rereader = _SlowRereader(monkeypatch, checkpoint_dir(workdir))
    checkpoints = Checkpoints(workdir, async_save=False)
    _, step = checkpoints.restore_latest(abstract, data, warn=lambda _: None)
    rereader.read()  # process 0 has returned: the last reread ends
    checkpoints.close()
    assert step == 1
    assert sorted(os.listdir(os.path.join(workdir, "damaged_checkpoints"))) == ["2", "3"]
    assert rereader.missing == [], f"process 1 listed steps {rereader.missing} then lost them"


@pytest.mark.parametrize(
    "process_1_says,error,message",
    [
        ("transient|HttpError: 503", CheckpointReadError, r"persisted .*\(process 1: HttpError"),
        (
            "count|ProcessCountError: checkpoint step 2 holds the data iterator states of 1 "
            "processes, this run has 2: resume with the same number of processes",
            ProcessCountError,
            "^checkpoint step 2 holds the data iterator states of 1 processes, this run has 2",
        ),
    ],
    ids=["transient", "process-count"],
)
def test_what_is_not_damage_on_another_process_stops_this_one_and_moves_nothing(
    tmp_path, monkeypatch, seed, process_1_says, error, message
):
    workdir = str(tmp_path)
    abstract, data = _two_steps(workdir, seed)
    _as_process_0_of_2(monkeypatch, [process_1_says, "ok"])
    checkpoints = Checkpoints(workdir, async_save=False)
    with pytest.raises(error, match=message):
        checkpoints.restore_latest(abstract, data, warn=lambda _: None)
    checkpoints.close()
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def test_every_process_says_it_retries_a_read(capsys):
    """A retried read is said on every process (a run's `warn` is silent off process 0), with
    the process index when there are several; one process: through `warn`, unchanged."""
    said = []
    checkpoint._retry_warning(said.append, 0, 1)("retrying in 2 s")
    checkpoint._retry_warning(said.append, 0, 2)("retrying in 8 s")
    checkpoint._retry_warning(said.append, 1, 2)("retrying in 30 s")
    assert said == ["retrying in 2 s", "process 0: retrying in 8 s"]
    assert capsys.readouterr().err == "process 1: retrying in 30 s\n"


def test_an_orbax_without_its_tensorstore_contexts_still_checkpoints(tmp_path, monkeypatch, caplog):
    """The retry bound sits in Orbax's private module globals: an Orbax without them (a
    rename) keeps TensorStore's default with one warning, and checkpoints still work."""
    monkeypatch.delattr(checkpoint.tensorstore_utils, "_BASE_TS_CONTEXT")
    checkpoint._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert checkpoint._bound_tensorstore_retries() is False
        assert checkpoint._bound_tensorstore_retries() is False
    assert caplog.text.count("has no _BASE_TS_CONTEXT or _DEFAULT_OCDBT_TS_CONTEXT") == 1
    checkpoints = Checkpoints(str(tmp_path), async_save=False)
    checkpoints.save(1, {"w": jnp.arange(4.0)})
    checkpoints.wait()
    assert checkpoints.latest().endswith("checkpoints/1")
