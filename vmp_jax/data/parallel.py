"""Dataset writers' work spread over processes (`make-synthetic`, `make-frames`)."""

import collections
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures

# Chunks of jobs submitted but not yet taken by the caller, per worker process: enough to keep
# every worker busy while the caller writes, few enough that a slow writer (a disk, a bucket)
# holds a fixed number of finished results (a packed video's JPEGs: about 7 MiB each) rather
# than every video's.
IN_FLIGHT_PER_WORKER = 2


def map_in_processes(fn: Callable, jobs: Iterable, workers: int | None, chunksize: int = 1):
    """Yields fn(job) for each job, in order; in this process for workers=1, else in `workers`
    spawned processes (default: all cores). Spawned, because forking a process that has started
    JAX's threads can deadlock.

    Jobs are read from `jobs` lazily and at most IN_FLIGHT_PER_WORKER x workers chunks of
    `chunksize` are submitted and not yet yielded (Executor.map submits every job at once and
    keeps every result until it is taken). An exception raised by fn is raised here at that
    job's place; the jobs not yet started are then cancelled, as when the caller stops early."""
    if workers == 1:
        yield from map(fn, jobs)
        return
    workers = workers or os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunks = _chunks(jobs, chunksize)
        pending = collections.deque()
        try:
            for chunk in itertools.islice(chunks, IN_FLIGHT_PER_WORKER * workers):
                pending.append(pool.submit(_run_chunk, fn, chunk))
            while pending:
                results = pending.popleft().result()
                for chunk in itertools.islice(chunks, 1):  # one in, one out
                    pending.append(pool.submit(_run_chunk, fn, chunk))
                yield from results
        finally:
            for future in pending:
                future.cancel()


def _chunks(jobs: Iterable, size: int) -> Iterator[list]:
    it = iter(jobs)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _run_chunk(fn: Callable, chunk: list) -> list:
    return [fn(job) for job in chunk]
