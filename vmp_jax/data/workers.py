"""Grain's worker processes and the signals that stop a run (SIGTERM, SIGINT).

A stopped run's training process finishes its step, saves, and closes its iterator, which
stops the workers and frees their shared memory (`vmp_jax.engine.preemption`). The signal may
reach the workers as well: a terminal's Ctrl-C, and some cluster agents, signal the whole
process group. Killed by it mid-batch, a worker leaves its shared memory behind and fails the
batches still to come from it (a validation, the steps before all processes stop).

So workers ignore both signals, from their first instruction on: the training process calls
into Grain (where workers are started, in the calling thread or in threads made there) with
the two signals blocked (`SignalsHeld`), a process inherits its starting thread's blocked
signals through fork and exec, and `worker_init` ignores them before unblocking them (as
Python's resource tracker starts its process). A signal that comes meanwhile goes to another
thread of the training process, or waits until the call returns: it is never lost. A worker
whose training process is gone without closing it (SIGKILL) exits on its own.

The end of a pass (an evaluation's last batch read) comes as a StopIteration raised in
Grain's prefetch thread, whose frames, kept in reference cycles by the exception's tracebacks
(Grain re-raises it with a filtered one), still hold the pass's last batch. Left so, the
batch's shared memory (Grain's, unlinked when the batch is freed) would wait for the cyclic
garbage collector, which in a process that ends soon after runs only at interpreter shutdown,
after multiprocessing has stopped the thread that Grain unlinks with: left to Python's resource
tracker, which warns of "leaked shared_memory objects" (process 1 of a 2-process `vmp train`,
whose last validation is its last work). So `_HeldIterator` collects them at the end of a pass.
"""

import contextlib
import functools
import gc
import os
import signal
import threading
import time
from multiprocessing import resource_tracker

import grain

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def held():
    """SIGTERM and SIGINT blocked in this thread, and in the threads and processes it starts,
    inside the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def init_fn():
    """Grain's `worker_init_fn` for the workers of this process (`mp_prefetch`)."""
    return functools.partial(worker_init, os.getpid())


def worker_init(parent: int, _worker_index: int, _worker_count: int) -> None:
    """Run first in each worker: the stop signals ignored, the training process (pid
    `parent`) watched."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # those pending: discarded
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:  # an orphan's parent is init (or a subreaper)
        time.sleep(0.5)
    os._exit(1)


class SignalsHeld(grain.IterDataset):
    """`parent` (a pipeline with workers), each call into its iterators made with the stop
    signals held; its states are the parent's own (checkpoints are unchanged)."""

    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)

    def __iter__(self) -> grain.DatasetIterator:
        # Python's resource tracker (which the workers' shared memory needs) started now: its
        # start unblocks the two signals in the starting thread, which would let a worker
        # started in that thread after it take a signal before `worker_init`.
        resource_tracker.ensure_running()
        with held():
            return _HeldIterator(self._parent.__iter__())

    def __str__(self) -> str:
        return "SignalsHeld"


class _HeldIterator(grain.DatasetIterator):
    def __next__(self):
        with held():
            try:
                return next(self._parent)
            except StopIteration:
                pass
        gc.collect()  # the end of a pass: its last batch, in Grain's reference cycles, freed
        raise StopIteration

    def get_state(self) -> dict:
        return self._parent.get_state()

    def set_state(self, state: dict) -> None:
        with held():  # Grain starts new workers from the restored state
            self._parent.set_state(state)
