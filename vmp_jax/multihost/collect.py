"""Host-side values of every process brought together (no-ops in a single-process run)."""

import jax
import numpy as np
from jax.experimental import multihost_utils


def gather_rows(*local: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every process's rows of each array, concatenated in process order (every process gets
    them all)."""
    if jax.process_count() == 1:
        return local
    return tuple(np.asarray(a) for a in multihost_utils.process_allgather(list(local), tiled=True))


def sum_over_processes(value: int) -> int:
    """The sum of an integer over all processes."""
    if jax.process_count() == 1:
        return value
    return int(np.sum(multihost_utils.process_allgather(np.array([value]))))


def mean_over_processes(value: float) -> float:
    """The mean of a float over all processes."""
    if jax.process_count() == 1:
        return value
    return float(np.mean(multihost_utils.process_allgather(np.array([value], np.float32))))


def on_every_process(ok: bool) -> bool:
    """Whether `ok` holds on every process (a collective: every process calls it)."""
    return sum_over_processes(int(not ok)) == 0


def gather_texts(text: str, max_bytes: int = 1024) -> list[str]:
    """Every process's `text` (UTF-8, cut to `max_bytes`), in process order (a collective:
    every process calls it). One process's outcome, seen by all, lets all decide alike."""
    if jax.process_count() == 1:
        return [text]
    data = text.encode()[:max_bytes]
    row = np.zeros((1, max_bytes + 1), np.int32)  # the length, then the bytes
    row[0, 0], row[0, 1 : 1 + len(data)] = len(data), np.frombuffer(data, np.uint8)
    (rows,) = gather_rows(row)
    return [bytes(r[1 : 1 + r[0]].astype(np.uint8)).decode(errors="replace") for r in rows]
