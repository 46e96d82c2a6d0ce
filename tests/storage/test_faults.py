"""Storage faults against the GCS emulator (the `gcs` fixture): a checkpoint whose objects
answer 503 for a while is read once they answer again, and moved nowhere; one that keeps
failing stops the run with an error saying so, moved nowhere; and what tells a transient error
from a damaged file. Also: `vmp bench-data --bucket` without the dev extra says what to install.

The client libraries retry a failed request themselves (gcsfs 6 times over about 30 s); here
their waits are cut to nothing, so that a fault outlasting them costs no time."""

import asyncio
import json
import sys
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmp_jax import cli, storage
from vmp_jax.engine import checkpoint
from vmp_jax.engine.checkpoint import CheckpointReadError, Checkpoints, CheckpointSaveError
from vmp_jax.storage import errors

GCSFS_TRIES = 6  # gcsfs' own attempts per request (gcsfs.core.GCSFileSystem.retries)


@pytest.fixture
def quick_retries(monkeypatch):
    """gcsfs' retries without their waits, ours with short ones."""
    import gcsfs.retry

    async def no_wait(_seconds):
        await asyncio.sleep(0)

    monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=no_wait))
    monkeypatch.setattr(errors, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    quick = {**checkpoint.TENSORSTORE_GCS_RETRIES, "initial_delay": "10ms", "max_delay": "10ms"}
    monkeypatch.setattr(checkpoint, "TENSORSTORE_GCS_RETRIES", quick)


def _iterator():
    return iter(grain.MapDataset.range(100).to_iter_dataset())


def _two_steps(workdir: str, seed: int):
    """Checkpoints of steps 1 and 2 (a small state and an iterator) in `workdir`; returns the
    state saved at step 2 and its abstract form."""
    rng = np.random.default_rng(seed)
    state = {"model": {"w": jnp.asarray(rng.normal(size=8), jnp.float32)}, "optimizer": {}}
    checkpoints, data = Checkpoints(workdir, async_save=False), _iterator()
    next(data)
    checkpoints.save(1, state, data)
    state = jax.tree.map(lambda x: x + 1, state)
    next(data)
    checkpoints.save(2, state, data)
    checkpoints.close()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    return state, abstract


def test_a_checkpoint_answering_503_for_a_while_is_read_and_not_moved(gcs, quick_retries, seed):
    workdir = f"gs://vmp-test/faults-{seed}"
    saved, abstract = _two_steps(workdir, seed)
    # Two of gcsfs' rounds of retries: more than it bears alone, less than our retries bear.
    gcs.fail_next(2 * GCSFS_TRIES, f"vmp-test/faults-{seed}/checkpoints/2/data/")
    checkpoints, warned = Checkpoints(workdir, async_save=False), []
    state, step = checkpoints.restore_latest(abstract, _iterator(), warn=warned.append)
    checkpoints.close()
    assert gcs.faults_served() == 2 * GCSFS_TRIES
    assert step == 2 and 1 <= len(warned) <= 2, warned
    np.testing.assert_array_equal(state["model"]["w"], saved["model"]["w"])
    assert all("transient storage error" in w and "503" in w for w in warned), warned
    assert not storage.exists(f"{workdir}/damaged_checkpoints")


def test_a_checkpoint_that_keeps_failing_stops_the_run_and_is_not_moved(gcs, quick_retries, seed):
    workdir = f"gs://vmp-test/failing-{seed}"
    _, abstract = _two_steps(workdir, seed)
    gcs.fail_next(10_000, f"vmp-test/failing-{seed}/checkpoints/2/data/")
    checkpoints, warned = Checkpoints(workdir, async_save=False), []
    try:
        with pytest.raises(CheckpointReadError, match=r"persisted after 3 retries .*503.*nothing"):
            checkpoints.restore_latest(abstract, _iterator(), warn=warned.append)
    finally:
        gcs.fail_next(0, "")
    checkpoints.close()
    assert len(warned) == 3, warned
    assert not storage.exists(f"{workdir}/damaged_checkpoints")
    assert storage.exists(f"{workdir}/checkpoints/2/commit_success.txt")


def _http_error(code: int):
    def make():  # gcsfs imported in the test, after the emulator's variables are set
        from gcsfs.retry import HttpError

        return HttpError({"code": code, "message": "x"})

    return make


def _raised_from(outer: Exception, inner) -> Exception:
    try:
        try:
            raise inner() if callable(inner) else inner
        except Exception as e:
            raise outer from e
    except Exception as e:
        return e


@pytest.mark.parametrize(
    "error,transient",
    [
        (_http_error(503), True),
        (_http_error(429), True),
        (_http_error(500), True),
        (_http_error(404), False),
        (_http_error(403), False),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (ValueError("UNAVAILABLE: Error reading x: HTTP response code: 503"), True),
        (ValueError("DATA_LOSS: Error reading x: truncated"), False),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.0GiB"), False),
        (ValueError("RESOURCE_EXHAUSTED: Error reading x: HTTP response code: 429"), True),
        (ValueError("ABORTED: Error writing x: HTTP response code: 503"), True),
        (ValueError("ABORTED: Transaction aborted"), False),
        (FileNotFoundError("gs://b/x/data/process_1-of-2.json"), False),
        (json.JSONDecodeError("Expecting value", "{", 1), False),
        (lambda: _raised_from(RuntimeError("restore failed"), _http_error(502)), True),
        (lambda: _raised_from(RuntimeError("restore failed"), FileNotFoundError("x")), False),
    ],
)
def test_which_errors_are_transient(gcs, error, transient):
    error = error() if callable(error) else error
    assert errors.is_transient(error) is transient


def test_retrying_retries_transient_errors_only_and_gives_up(seed):
    waits, calls = [], []

    def flaky(failures: int, error: Exception):
        def attempt():
            calls.append(1)
            if len(calls) <= failures:
                raise error
            return "read"

        return attempt

    delays = tuple(np.random.default_rng(seed).uniform(0.1, 5, 3))
    run = lambda a: errors.retrying(a, "x", delays, warn=lambda _: None, sleep=waits.append)  # noqa: E731
    assert run(flaky(3, ConnectionResetError())) == "read" and waits == list(delays)
    calls.clear(), waits.clear()
    with pytest.raises(ConnectionResetError):
        run(flaky(4, ConnectionResetError()))
    assert len(calls) == 4
    calls.clear(), waits.clear()
    with pytest.raises(FileNotFoundError):
        run(flaky(1, FileNotFoundError()))
    assert len(calls) == 1 and waits == []


@pytest.mark.parametrize("missing", ["gcp_storage_emulator", "vmp_devtools"])
def test_bench_data_bucket_without_the_dev_extra_says_what_to_install(
    missing, monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    folder = tmp_path / "bench"
    assert cli.main(["bench-data", "--bucket", "2", "--folder", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "vmp bench-data: error: " in err and "pip install -e '.[dev]'" in err, err
    assert not folder.exists()  # said before any work


def test_a_save_that_keeps_failing_says_the_fault_was_transient(gcs, quick_retries, seed):
    """The step's metadata (written through gcsfs) answering 503 past gcsfs' retries: the run
    stops saying the fault was transient and the same command resumes, not to free space."""
    workdir = f"gs://vmp-test/saving-{seed}"
    state, _ = _two_steps(workdir, seed)
    gcs.fail_next(10_000, f"vmp-test/saving-{seed}/checkpoints/3/_CHECKPOINT_METADATA")
    checkpoints = Checkpoints(workdir, async_save=False)
    try:
        with pytest.raises(CheckpointSaveError, match=r"503.*a transient error\): run the same"):
            checkpoints.save(3, state, _iterator())
        assert gcs.faults_served() >= GCSFS_TRIES
    finally:
        gcs.fail_next(0, "")


def test_a_save_meeting_a_few_503s_completes_and_restores(gcs, quick_retries, seed):
    """A few 503s on the objects of the step being saved: gcsfs' retries absorb those on the
    metadata (the first requests of the save), TensorStore's (TENSORSTORE_GCS_RETRIES) those
    on the arrays' data; the step commits and reads back as saved."""
    workdir = f"gs://vmp-test/saving-503-{seed}"
    state, abstract = _two_steps(workdir, seed)
    state = jax.tree.map(lambda x: x * 3, state)
    checkpoints = Checkpoints(workdir, async_save=False)
    try:
        gcs.fail_next(GCSFS_TRIES - 1, f"vmp-test/saving-503-{seed}/checkpoints/3/")
        checkpoints.save(3, state, _iterator())
        assert gcs.faults_served() == GCSFS_TRIES - 1
        tensorstore_tries = checkpoint.TENSORSTORE_GCS_RETRIES["max_retries"] + 1
        gcs.fail_next(
            tensorstore_tries - 1, f"vmp-test/saving-503-{seed}/checkpoints/4/state/ocdbt"
        )
        checkpoints.save(4, state, _iterator())
        assert gcs.faults_served() == tensorstore_tries - 1
    finally:
        gcs.fail_next(0, "")
    checkpoints.close()
    assert storage.exists(f"{workdir}/checkpoints/4/commit_success.txt")
    restored, step = Checkpoints(workdir, async_save=False).restore_latest(abstract, _iterator())
    assert step == 4
    np.testing.assert_array_equal(restored["model"]["w"], state["model"]["w"])


def test_our_own_writes_to_a_bucket_outlast_gcsfs_retries(gcs, quick_retries, seed):
    """config.json, classes.txt, metrics.jsonl (storage.write_bytes and what uploads through
    it): 503s past gcsfs' own tries are retried by `storage.retrying`, and the file lands."""
    path, text = f"gs://vmp-test/own-{seed}/config.json", json.dumps({"seed": seed})
    # gcsfs' one-request upload names the object in its body: every request of the bucket.
    gcs.fail_next(2 * GCSFS_TRIES, "vmp-test/")
    try:
        storage.write_text(path, text)
        assert gcs.faults_served() == 2 * GCSFS_TRIES
    finally:
        gcs.fail_next(0, "")
    assert storage.read_text(path) == text
