"""`parallel.map_in_processes`: results in order, a job's error at its place, and a fixed number
of results held however many jobs there are and however slow the caller (`vmp make-frames`
writing to a slow disk or bucket). The jobs are synthetic: no video is encoded."""

import os
import time
import tracemalloc

import pytest

from vmp_jax.data import parallel

PAYLOAD = 2**20  # bytes each job returns: a packed video's JPEGs, scaled down


def _marked_payload(job) -> tuple[int, bytes]:
    """Marks job `i` started (a file in `folder`) and returns a payload of PAYLOAD bytes."""
    folder, i = job
    open(os.path.join(folder, str(i)), "w").close()
    return i, bytes([i % 256]) * PAYLOAD


def _fails_at_five(i: int) -> int:
    if i == 5:
        raise ValueError(f"job {i} failed")
    return i


def test_a_slow_caller_holds_a_fixed_number_of_results(tmp_path):
    jobs, workers = 60, 2
    tracemalloc.start()
    try:
        started_not_taken = []
        results = parallel.map_in_processes(
            _marked_payload, ((str(tmp_path), i) for i in range(jobs)), workers
        )
        for taken, (i, payload) in enumerate(results, start=1):
            assert i == taken - 1 and payload[:1] == bytes([i % 256])  # in order
            del payload
            time.sleep(0.03)  # a slow writer
            started_not_taken.append(len(os.listdir(tmp_path)) - taken)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert taken == jobs
    limit = parallel.IN_FLIGHT_PER_WORKER * workers
    assert max(started_not_taken) <= limit, started_not_taken
    # Results held at once: the submitted ones and the one being taken, not all 60 (60 MiB).
    assert peak < (limit + 4) * PAYLOAD, f"peak {peak / 2**20:.1f} MiB"


def test_an_error_is_raised_at_its_job_after_the_results_before_it():
    taken = []
    with pytest.raises(ValueError, match="job 5 failed"):
        for r in parallel.map_in_processes(_fails_at_five, range(40), 2, chunksize=2):
            taken.append(r)
    assert taken == [0, 1, 2, 3]  # chunk (4, 5) fails whole, as Executor.map's chunks do
