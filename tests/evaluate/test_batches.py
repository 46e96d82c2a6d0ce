"""`evaluate.batches.gather_rows`, the batch loop both evaluations (multi-view and AVA) run:
each host keeps its own part of the global batch's output, the skipped count adds up, a
preemption stops after its batch, and the dataset's iterator is closed in every case."""

import numpy as np
import pytest

from vmp_jax.engine import preemption
from vmp_jax.evaluate import batches


class _Batches:
    """Three host batches of 2 rows (index 2i, 2i + 1), an iterator with a close as Grain's
    (not a generator: nothing closes it but a call); records what was read and the close."""

    def __init__(self, count: int = 3):
        self.count, self.read, self.closed = count, 0, False

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.read == self.count:
            raise StopIteration
        i, self.read = self.read, self.read + 1
        skipped = np.array([i == 1, False])
        return {"video": np.zeros((2, 1)), "index": np.arange(2 * i, 2 * i + 2), "skipped": skipped}

    def close(self) -> None:
        self.closed = True


class _StopAfter:
    """A preemption signalled during batch `n`."""

    cause = "SIGTERM to a process"

    def __init__(self, n: int):
        self.n = n

    def reached(self, number: int) -> bool:
        return number >= self.n


def _step(processes: int):
    """The eval step's output of the global batch: row r of host h is 100 h + its index."""

    def step(batch):
        return np.concatenate([100 * h + batch["index"] for h in range(processes)])

    return step


def _rows(batch, output):
    return {"index": batch["index"], "output": output}


def test_each_host_keeps_its_own_part_of_the_global_output(monkeypatch):
    dataset = _Batches()
    monkeypatch.setattr(batches.jax, "process_index", lambda: 1)  # host 1 of 2 (no gather)
    gathered, skipped = batches.gather_rows(dataset, _step(2), _rows)
    np.testing.assert_array_equal(gathered["index"], np.arange(6))
    np.testing.assert_array_equal(gathered["output"], 100 + np.arange(6))
    assert skipped == 1 and dataset.closed


def test_a_preemption_stops_after_its_batch_and_closes_the_dataset():
    dataset = _Batches()
    with pytest.raises(preemption.Preempted, match=r"after batch 2 \(SIGTERM to a process\)"):
        batches.gather_rows(dataset, _step(1), _rows, preempt=_StopAfter(2))
    assert dataset.read == 2 and dataset.closed


def test_no_batch_gathers_nothing():
    dataset = _Batches(count=0)
    gathered, skipped = batches.gather_rows(dataset, _step(1), _rows)
    assert gathered == {} and skipped == 0 and dataset.closed
