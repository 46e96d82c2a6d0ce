"""Orbax checkpoints in `WORKDIR/checkpoints/<step>/`: the train state and the Grain iterator
state as separate items, saved asynchronously; the last `keep` and the best by validation
top-1 are kept.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed during a save leaves no checkpoint that looks complete; the next run resumes
from the latest finished one. In a multi-process run every process writes its shards of the
state and its own iterator state (Grain's `process_<i>-of-<n>.json`); process 0 writes the
metadata and commits the step once all have finished. A workdir in a bucket (`gs://...`) has
no rename: there Orbax writes the step in place and commits it with a `commit_success.txt`,
and a step without one is not a checkpoint.
"""

import contextlib
import re

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint._src.metadata import (
    array_metadata_store,
)  # as Orbax's own registry (no public path)
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

from vmp_jax import storage
from vmp_jax.engine import relayout
from vmp_jax.models import layers
from vmp_jax.multihost import collect

STATE, DATA = "state", "data"
storage.disable_listing_caches()  # before Orbax makes its first filesystem for a bucket

# Orbax splits the write of an array replicated over several devices among the replicas,
# slicing it with a compiled program per shape and sharding: for the many small arrays of a
# model (norms, biases, A_log, D, per-block kernels) that costs more than it saves (4.5 s of
# compiles in a tiny model's first save on 8 devices). Arrays whose slice per replica would
# be smaller than this are written whole by one replica; larger ones are still split.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 1 << 20


def _register_array_handler() -> None:
    """jax.Array's Orbax handler with that threshold (Orbax's registry is global, and
    StandardSave takes no handler of its own), with the metadata store Orbax's own default
    handler has (its module has no public path)."""
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL,
        array_metadata_store=array_metadata_store.Store(),
    )
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints: an absolute local path, or under a bucket URL as given."""
    return storage.join(storage.resolve(workdir), "checkpoints")


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        _register_array_handler()
        keep_policy = policy.AnyPreservationPolicy(
            [
                policy.LatestN(n=keep),
                policy.BestN(
                    get_metric_fn=lambda m: m["top1"], n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=keep_policy,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = checkpoint_dir(workdir)
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=(STATE, DATA), options=options
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def latest(self) -> str | None:
        """The directory of the latest checkpoint saved, or None."""
        step = self.latest_step()
        return None if step is None else storage.join(self.directory, str(step))

    def save(self, step: int, state, data_iterator=None, metrics: dict | None = None) -> None:
        """Starts saving `step` (asynchronously); a failure of this or of the save before it
        (disk full, directory not writable) is raised as CheckpointSaveError."""
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        with self._saving(step):
            self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)

    @contextlib.contextmanager
    def _saving(self, step: int | None):
        """Any error of the block as a CheckpointSaveError naming the directory (Orbax and
        TensorStore report I/O failures in kinds of their own)."""
        try:
            yield
        except Exception as error:
            what = f"step {step}" if step is not None else "the last step"
            raise CheckpointSaveError(
                f"saving the checkpoint of {what} (or the one before it) under {self.directory} "
                f"failed: {type(error).__name__}: {error}; the checkpoints already written are "
                "intact: free space or fix the directory's permissions, then run the same "
                "command to resume"
            ) from error

    def restore_latest(self, abstract_state, data_iterator=None, warn=print):
        """(state, step) of the newest checkpoint that every process restores, or (None, None)
        when there is none. A newer one that does not restore (files missing or truncated) is
        moved to WORKDIR/damaged_checkpoints/<step> (kept, out of the way of the steps to
        come) with a warning naming it. When none restores, nothing is moved and a RuntimeError
        names the newest and its error: a config that does not fit the saved state is not
        damage."""
        damaged, first_error = [], None  # [(path, cause)], newest first
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, error = self.restore(step, abstract_state, data_iterator), None
            except ProcessCountError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever a damaged checkpoint raises
                state, error = None, e
            if collect.on_every_process(error is None):
                for bad, cause in damaged:
                    warn(f"checkpoint {bad} does not restore ({cause}): moved it aside")
                    self._move_aside(bad)
                return state, step
            first_error = first_error or error
            cause = _short(error) if error else "it failed on another process"
            damaged.append((storage.join(self.directory, str(step)), cause))
        if damaged:  # none restores: a config that does not fit them, not damage
            newest, cause = damaged[0]
            raise RuntimeError(
                f"no checkpoint under {self.directory} restores into this run's state; the "
                f"newest, {newest}: {cause}"
            ) from first_error
        return None, None

    def _move_aside(self, path: str) -> None:
        """path -> WORKDIR/damaged_checkpoints/<step>[.<n>], by process 0, then all reload."""
        if jax.process_index() == 0:
            folder = storage.join(storage.dirname(self.directory), "damaged_checkpoints")
            storage.makedirs(folder)
            name = storage.basename(path)
            target, n = storage.join(folder, name), 1
            while storage.exists(target):
                target, n = storage.join(folder, f"{name}.{n}"), n + 1
            storage.rename(path, target)
        collect.on_every_process(True)  # every process waits for the move
        self.manager.reload()

    def restore(self, step: int, abstract_state, data_iterator=None):
        """The state at `step`, placed as `abstract_state`'s shardings; the data iterator (if
        given) is moved to where it was at that step. A state saved in the other block layout
        (model.scan_layers) is converted (`relayout`)."""
        items = {}
        if data_iterator is not None:
            self._check_data_states(step)
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        item, _, saved = _state_metadata(storage.join(self.directory, str(step)))
        if _has_stacked_layers(saved["model"]) == _has_stacked_layers(abstract_state["model"]):
            items[STATE] = ocp.args.StandardRestore(abstract_state)
            return self.manager.restore(step, args=ocp.args.Composite(**items))[STATE]
        if items:
            self.manager.restore(step, args=ocp.args.Composite(**items))
        return relayout.convert(_restore_numpy(item, saved), abstract_state)

    def _check_data_states(self, step: int) -> None:
        """Each process restores the iterator state it saved (Grain's
        `process_<i>-of-<n>.json`): a run resumes with the process count it saved with."""
        index, count = jax.process_index(), jax.process_count()
        saved = storage.join(self.directory, str(step), DATA)
        if storage.exists(storage.join(saved, f"process_{index}-of-{count}.json")):
            return
        names = storage.listdir(saved)
        files = (re.fullmatch(r"process_\d+-of-(\d+)\.json", n) for n in names)
        counts = sorted({m[1] for m in files if m})
        if not counts:
            raise FileNotFoundError(f"no data iterator state in {saved}")
        raise ProcessCountError(
            f"checkpoint step {step} holds the data iterator states of {' or '.join(counts)} "
            f"processes, this run has {count}: resume with the same number of processes"
        )

    def wait(self) -> None:
        with self._saving(None):
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the message names the directory and the cause."""


class ProcessCountError(ValueError):
    """A checkpoint saved by another number of processes than this run has."""


def _short(error: Exception) -> str:
    """An error's kind and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def workdir_of(path: str) -> str:
    """The workdir holding the checkpoint at `path` (the current directory if none does)."""
    path = storage.resolve(path)
    while True:
        if storage.isdir(storage.join(path, "checkpoints")):
            return path
        parent = storage.dirname(path)
        if parent == path or storage.is_url(path) != storage.is_url(parent):  # at the root
            return "."
        path = parent


def _locate(path: str) -> tuple[str, int]:
    """(checkpoints root, step) of a step directory (`.../checkpoints/<step>`), a checkpoints
    directory or a workdir (its latest step)."""
    path = storage.resolve(path)
    if not storage.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if storage.isdir(storage.join(path, STATE)):
        return storage.dirname(path), int(storage.basename(path))
    root = path if storage.basename(path) == "checkpoints" else checkpoint_dir(path)
    manager = ocp.CheckpointManager(root, item_names=(STATE, DATA))
    step = manager.latest_step()
    manager.close()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {root}")
    return root, step


def restore_state(path: str, abstract_state):
    """The train state of one checkpoint (a step directory, a checkpoints directory or a
    workdir), placed as `abstract_state`; returns (state, step)."""
    root, step = _locate(path)
    manager = ocp.CheckpointManager(root, item_names=(STATE, DATA))
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    manager.close()
    return restored[STATE], step


@contextlib.contextmanager
def _absl_level(level: int):
    """Orbax logs through absl; raise its threshold for the duration of a block."""
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(level)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def _state_metadata(path: str) -> tuple[str, int, dict]:
    """(the state item's directory, step, its metadata tree) of one checkpoint."""
    root, step = _locate(path)
    item = storage.join(root, str(step), STATE)
    # The step's metadata file sits one level up, in the manager's layout; orbax warns that
    # the item has none, which is expected here.
    with _absl_level(absl_logging.ERROR):
        tree = ocp.PyTreeCheckpointer().metadata(item).item_metadata.tree
    return item, step, tree


def saved_parts(path: str) -> set[str]:
    """What a checkpoint's train state holds: {"model", "optimizer"} and "ema" when the run
    kept an EMA copy of the weights."""
    return set(_state_metadata(path)[2])


def restore_params(path: str, abstract_params: dict, *, part: str = "model"):
    """The weights of one checkpoint's model (or its `ema` copy) as numpy arrays, whatever the
    optimiser, mesh or device count it was saved with.

    abstract_params: {path tuple: Param} of the model to fill (`names.abstract_params`).
    Returns ({path tuple: np.ndarray}, step); FileNotFoundError when the checkpoint has no
    such part, ValueError naming the first parameter it lacks or has in another shape.
    """
    item, step, saved = _state_metadata(path)
    if part not in saved:
        raise FileNotFoundError(f"{item} has no {part!r} weights (parts: {sorted(saved)})")
    restored = relayout.flatten(_restore_numpy(item, {part: saved[part]})[part])
    params = {}
    for key, abstract in abstract_params.items():
        value = relayout.saved_value(restored, tuple(map(str, key)))
        name = ".".join(map(str, key))
        if value is None:
            raise ValueError(f"{item}: no parameter {name} (expected {abstract.shape})")
        if value.shape != abstract.shape:
            raise ValueError(
                f"{item}: parameter {name} has shape {value.shape}, expected "
                f"{abstract.shape} for this config"
            )
        params[key] = value
    return params, step


def _restore_numpy(item: str, target: dict) -> dict:
    """The subtree `target` (of the item's metadata tree) of a saved state, as numpy arrays on
    the host, whatever mesh it was saved from."""
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=as_numpy, partial_restore=True)
    with _absl_level(absl_logging.ERROR):
        return ocp.PyTreeCheckpointer().restore(item, args=args)


def _has_stacked_layers(tree: dict) -> bool:
    """Whether a saved model's blocks are stacked (model.scan_layers): "layers" holds weight
    names rather than block indices."""
    blocks = tree.get(layers.LAYERS)
    return blocks is not None and not all(str(k).isdigit() for k in blocks)
