"""Dataset writers' work spread over processes (`make-synthetic`, `make-frames`)."""

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent import futures


def map_in_processes(fn: Callable, jobs: Iterable, workers: int | None, chunksize: int = 1):
    """Yields fn(job) for each job, in order; in this process for workers=1, else in `workers`
    spawned processes (default: all cores). Spawned, because forking a process that has started
    JAX's threads can deadlock."""
    if workers == 1:
        yield from map(fn, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)
