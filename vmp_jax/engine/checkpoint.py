"""Orbax checkpoints in `WORKDIR/checkpoints/<step>/`: the train state and the Grain iterator
state as separate items, saved asynchronously; the last `keep` and the best by validation
top-1 (frame-mAP for the AVA detector) are kept.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed during a save leaves no checkpoint that looks complete; the next run resumes
from the latest finished one. In a multi-process run every process writes its shards of the
state and its own iterator state (Grain's `process_<i>-of-<n>.json`); process 0 writes the
metadata and commits the step once all have finished. A workdir in a bucket (`gs://...`) has
no rename: there Orbax writes the step in place and commits it with a `commit_success.txt`,
and a step without one is not a checkpoint.
"""

import contextlib
import dataclasses
import functools
import logging
import math
import re
import sys

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath
from orbax.checkpoint._src.metadata import (
    array_metadata_store,
)  # as Orbax's own registry (no public path)

try:  # the TensorStore context Orbax makes for every read and write (no public setting)
    from orbax.checkpoint._src.serialization import tensorstore_utils
except ImportError:  # moved in another Orbax: `_bound_tensorstore_retries` warns
    tensorstore_utils = None
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

# How TensorStore (Orbax's array data and OCDBT manifests, in a bucket) retries a request that
# met a transient error (HTTP 408, 429, 5xx, a reset): waits doubling from 1 s, at most 32 s,
# 8 retries, about 2 minutes in all (as Google's own storage clients bound theirs). Orbax takes
# no context from its caller; it copies these dicts into every TensorStore context it makes.
TENSORSTORE_GCS_RETRIES = {"max_retries": 8, "initial_delay": "1s", "max_delay": "32s"}


def _register_array_handler() -> None:
    """jax.Array's Orbax handler with that threshold (Orbax's registry is global, and
    StandardSave takes no handler of its own), with the metadata store Orbax's own default
    handler has (its module has no public path)."""
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL,
        array_metadata_store=array_metadata_store.Store(),
    )
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _bound_tensorstore_retries() -> bool:
    """TENSORSTORE_GCS_RETRIES in the contexts Orbax makes from now on (TensorStore's own
    default is 32 retries, up to about 15 minutes). The contexts are Orbax's private module
    globals: an Orbax without them keeps TensorStore's default, with a warning, and False."""
    names = ("_BASE_TS_CONTEXT", "_DEFAULT_OCDBT_TS_CONTEXT")
    contexts = [getattr(tensorstore_utils, name, None) for name in names]
    if not all(isinstance(context, dict) for context in contexts):
        _warn_once(
            f"this orbax-checkpoint has no {' or '.join(names)}: TensorStore keeps its own GCS "
            f"retries (32, up to about 15 minutes) instead of {TENSORSTORE_GCS_RETRIES}"
        )
        return False
    for context in contexts:
        context["gcs_request_retries"] = dict(TENSORSTORE_GCS_RETRIES)
    return True


@functools.cache
def _warn_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


_bound_tensorstore_retries()  # for every read and write, Checkpoints' or not
# With best_fn set (Checkpoints), Orbax warns at every save without metrics (those between
# validations, at a stop); they are expected here.
logging.getLogger("absl").addFilter(
    lambda record: not record.getMessage().startswith("Requested `tracked_metric`")
)


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints: an absolute local path, or under a bucket URL as given."""
    return storage.join(storage.resolve(workdir), "checkpoints")


# The name every run's checkpoints carried their ranking figure under before it was the task's
# own ("top1", an AVA run's frame-mAP too).
LEGACY_METRIC = "top1"


def metric_reader(name: str):
    """The value that ranks a checkpoint by its saved metrics: `name` ("top1" for a
    classifier, "mAP" for the AVA detector), else the legacy "top1" (a step saved under the
    old name ranks with the new ones), else -inf (never the best; Orbax calls this at every
    save, where a KeyError would end the run)."""

    def value(metrics: dict) -> float:
        return metrics.get(name, metrics.get(LEGACY_METRIC, -math.inf))

    return value


class Checkpoints:
    """`metric` names the validation figure in `save`'s metrics that ranks the kept best
    checkpoint ("top1", or "mAP" for the AVA detector)."""

    def __init__(
        self, workdir: str, *, keep: int = 3, async_save: bool = True, metric: str = "top1"
    ):
        _bound_tensorstore_retries()
        _register_array_handler()
        self.metric = metric
        value = metric_reader(metric)
        keep_policy = policy.AnyPreservationPolicy(
            [
                policy.LatestN(n=keep),
                policy.BestN(get_metric_fn=value, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=keep_policy,
            # With best_fn set, Orbax writes each step's metrics into it (step/metrics/) and
            # reads them back when a run resumes; without it they live in memory only, and
            # a resumed run dropped the best step as one "without metrics".
            best_fn=value,
            best_mode="max",
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
            fix = (
                "the storage service failed for longer than its clients retry (a transient "
                "error): run the same command again to resume"
                if storage.is_transient(error)
                else "free space or fix the directory's permissions, then run the same "
                "command to resume"
            )
            raise CheckpointSaveError(
                f"saving the checkpoint of {what} (or the one before it) under {self.directory} "
                f"failed: {type(error).__name__}: {error}; the checkpoints already written are "
                f"intact: {fix}"
            ) from error

    def restore_latest(self, abstract_state, data_iterator=None, warn=print):
        """(state, step) of the newest checkpoint that every process restores, or (None, None)
        when there is none.

        Every process reads a step on its own first (its shards, its iterator state), retrying
        transient storage errors (`storage.retrying`); then all exchange what happened and take
        the same decision from the same facts. A step that does not restore on some process
        (files missing, truncated or undecodable) is passed over for the one before it; once
        one restores everywhere, the newer ones are moved to WORKDIR/damaged_checkpoints/<step>
        (kept, out of the way of the steps to come) with a warning naming each and the cause.
        A transient error that outlasts the retries, on any process, stops every process with
        a CheckpointReadError and moves nothing; so does a checkpoint saved by another number
        of processes (ProcessCountError). When none restores, nothing is moved and a
        RuntimeError names the newest and its error: a config that does not fit the saved
        state is not damage."""
        damaged, first_error = [], None  # [(path, cause)], newest first
        retry_warn = _retry_warning(warn, jax.process_index(), jax.process_count())
        for step in sorted(self.manager.all_steps(), reverse=True):
            path = storage.join(self.directory, str(step))
            state = None  # a newer step read here but not everywhere: freed before this read
            state, error = self._read_on_this_process(
                step, abstract_state, data_iterator, retry_warn
            )
            outcomes = [_Outcome.parse(o) for o in collect.gather_texts(_Outcome.of(error))]
            failed = [(i, o) for i, o in enumerate(outcomes) if o.kind != _Outcome.OK]
            if not failed:
                for bad, cause in damaged:
                    warn(f"checkpoint {bad} does not restore ({cause}): moved it aside")
                    self._move_aside(bad)
                if damaged:  # every process waits for all the moves, then rereads the steps
                    collect.on_every_process(True)
                    self.manager.reload()
                return state, step
            _stop_if_not_damage(path, failed, error)
            first_error = first_error or error
            damaged.append((path, _causes(failed, len(outcomes))))
        if damaged:  # none restores: a config that does not fit them, not damage
            newest, cause = damaged[0]
            raise RuntimeError(
                f"no checkpoint under {self.directory} restores into this run's state; the "
                f"newest, {newest}: {cause}"
            ) from first_error
        return None, None

    def _read_on_this_process(self, step: int, abstract_state, data_iterator, warn):
        """(state, None), or (None, the error) of reading `step` in this process alone,
        transient storage errors retried: no collective runs here, so a process that fails
        cannot leave another waiting in one."""
        what = f"reading checkpoint {storage.join(self.directory, str(step))}"
        try:
            read = lambda: self.restore(step, abstract_state, data_iterator)  # noqa: E731
            return storage.retrying(read, what, warn=warn), None
        except Exception as error:  # noqa: BLE001 - whatever a damaged checkpoint raises
            return None, error

    def _move_aside(self, path: str) -> None:
        """path -> WORKDIR/damaged_checkpoints/<step>[.<n>], by process 0 alone. The caller
        then waits on every process for all the moves before any rereads the steps (a process
        rereading while process 0 moves the next step would miss a file it listed)."""
        if jax.process_index() == 0:
            folder = storage.join(storage.dirname(self.directory), "damaged_checkpoints")
            storage.makedirs(folder)
            name = storage.basename(path)
            target, n = storage.join(folder, name), 1
            while storage.exists(target):
                target, n = storage.join(folder, f"{name}.{n}"), n + 1
            storage.rename(path, target)

    def restore(self, step: int, abstract_state, data_iterator=None):
        """The state at `step`, placed as `abstract_state`'s shardings; the data iterator (if
        given) is moved to where it was at that step. A state saved in the other block layout
        (model.scan_layers) is converted (`relayout`). Each process reads its own part and
        nothing more: no barrier among the processes (Orbax's restore ends in one, where a
        process whose read succeeded would wait for one whose read failed)."""
        where = epath.Path(storage.join(self.directory, str(step)))
        if data_iterator is not None:
            self._check_data_states(step)
        item, _, saved = _state_metadata(str(where))
        if _has_stacked_layers(saved["model"]) == _has_stacked_layers(abstract_state["model"]):
            args = ocp.args.StandardRestore(abstract_state)
            with contextlib.closing(ocp.StandardCheckpointHandler()) as handler:
                state = handler.restore(where / STATE, args=args)
        else:
            state = relayout.convert(_restore_numpy(item, saved), abstract_state)
        if data_iterator is not None:
            args = grain.checkpoint.CheckpointRestore(data_iterator)
            grain.checkpoint.CheckpointHandler().restore(where / DATA, args=args)
        return state

    def _check_data_states(self, step: int) -> None:
        """Each process restores the iterator state it saved (Grain's
        `process_<i>-of-<n>.json`): a run resumes with the process count it saved with. A
        step saved by this many processes that lacks this process's state is damaged
        (FileNotFoundError), not saved by another count."""
        index, count = jax.process_index(), jax.process_count()
        saved = storage.join(self.directory, str(step), DATA)
        own = storage.join(saved, f"process_{index}-of-{count}.json")
        if storage.exists(own):
            return
        names = storage.listdir(saved) if storage.isdir(saved) else []
        files = (re.fullmatch(r"process_\d+-of-(\d+)\.json", n) for n in names)
        counts = sorted({int(m[1]) for m in files if m})
        if not counts or count in counts:
            raise FileNotFoundError(f"{own} is missing (this process's data iterator state)")
        raise ProcessCountError(
            f"checkpoint step {step} holds the data iterator states of "
            f"{' or '.join(map(str, counts))} processes, this run has {count}: resume with the "
            "same number of processes"
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


class CheckpointReadError(RuntimeError):
    """A checkpoint could not be read for a transient storage error that outlasted the
    retries; nothing was moved, and the same command tries again."""


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """One process's result of reading a step, as exchanged among the processes."""

    OK, DAMAGED, TRANSIENT, PROCESS_COUNT = "ok", "does not restore", "transient", "count"
    kind: str
    cause: str = ""

    @classmethod
    def of(cls, error: Exception | None) -> str:
        if error is None:
            return cls.OK
        if isinstance(error, ProcessCountError):
            kind = cls.PROCESS_COUNT
        else:
            kind = cls.TRANSIENT if storage.is_transient(error) else cls.DAMAGED
        return f"{kind}|{_short(error)}"

    @classmethod
    def parse(cls, text: str) -> "_Outcome":
        kind, _, cause = text.partition("|")
        return cls(kind, cause)


def _retry_warning(warn, index: int, count: int):
    """The warning of a retried read: each process retries its own reads, so each says so,
    prefixed with its index when there are several; process 0 through `warn`, the others on
    stderr (their `warn` is usually silent: a run's reports come from process 0)."""
    if count == 1:
        return warn
    if index == 0:
        return lambda message: warn(f"process 0: {message}")
    return lambda message: print(f"process {index}: {message}", file=sys.stderr, flush=True)


def _stop_if_not_damage(path: str, failed: list, error: Exception | None) -> None:
    """Raises, on every process alike, when some process's failure to read `path` is not
    damage: a transient storage error that outlasted the retries, or another process count.
    failed: [(process index, _Outcome)] of the processes that did not read it."""
    for kind, error_class in (
        (_Outcome.PROCESS_COUNT, ProcessCountError),
        (_Outcome.TRANSIENT, CheckpointReadError),
    ):
        which = [(i, o) for i, o in failed if o.kind == kind]
        if not which:
            continue
        i, outcome = which[0]
        if kind == _Outcome.PROCESS_COUNT:
            raise error_class(outcome.cause.partition(": ")[2]) from error
        raise error_class(
            f"checkpoint {path} could not be read for a storage error that persisted after "
            f"{len(storage.errors.RETRY_DELAYS_S)} retries (process {i}: {outcome.cause}); "
            "nothing was moved: run the same command again to resume from it"
        ) from error


def _causes(failed: list, processes: int) -> str:
    """Why a step does not restore, from the processes it failed on: the cause alone in a
    single-process run, else each process named."""
    if processes == 1:
        return failed[0][1].cause
    return "; ".join(f"process {i}: {o.cause}" for i, o in failed)


def _short(error: Exception) -> str:
    """An error's kind and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def workdir_of(path: str, default: str | None = ".") -> str | None:
    """The workdir holding the checkpoint at `path` (`default`, the current directory, if
    none does)."""
    path = storage.resolve(path)
    while True:
        if storage.isdir(storage.join(path, "checkpoints")):
            return path
        parent = storage.dirname(path)
        if parent == path or storage.is_url(path) != storage.is_url(parent):  # at the root
            return default
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
    handler = contextlib.closing(ocp.PyTreeCheckpointHandler())  # no barrier among processes
    with _absl_level(absl_logging.ERROR), handler as h:
        return h.restore(epath.Path(item), args=args)


def _has_stacked_layers(tree: dict) -> bool:
    """Whether a saved model's blocks are stacked (model.scan_layers): "layers" holds weight
    names rather than block indices."""
    blocks = tree.get(layers.LAYERS)
    return blocks is not None and not all(str(k).isdigit() for k in blocks)
