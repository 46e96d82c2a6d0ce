"""Preemption: on SIGTERM or SIGINT a run finishes its current step, every process stops after
the same step, saves a checkpoint there and exits 0; the same command resumes it. An evaluation
(`vmp eval`, and the one `vmp ablate` runs after each variant) stops the same way after a batch,
writes nothing and exits 0; the same command evaluates again from the start.

Spot and preemptible VMs get a SIGTERM and about 30 s. One process: handlers of ours set a flag
that the loop reads after each step. Several processes (jax.distributed): jax's preemption
notifier already catches SIGTERM (a handler of ours would replace it) and tells the coordination
service, whose sync point (`multihost_utils.reached_preemption_sync_point`, asked after every
step) names one step for all processes; a SIGINT is passed on to it as a SIGTERM. A second
signal of the same kind stops the process at once, as without this module.

Grain's worker processes ignore both signals (`vmp_jax.data.workers`): one sent to the whole
process group leaves them serving, and the loop stops them when it closes its iterator after
the save. `vmp launch` passes its signals on to the processes it started and waits for them.
"""

import os
import signal
import threading


class Preempted(Exception):
    """Raised by `loop.train` once the preempted run's checkpoint is saved, and by an evaluation
    that stopped, so that nothing after them (an ablation's evaluation, the next run of a suite,
    a report) takes the work as finished; `vmp` prints the message (where to resume) and exits
    with this code."""

    exit_code = 0


class Preemption:
    """Whether the loop should save and stop after a step."""

    def __init__(self):
        import jax

        self.signal_name: str | None = None
        self._several = jax.process_count() > 1
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers in the main thread only
        wanted = (signal.SIGINT,) if self._several else (signal.SIGTERM, signal.SIGINT)
        for signum in wanted:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.signal_name == signal.Signals(signum).name:  # the second one: stop now
            signal.signal(signum, self._previous.pop(signum))
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        if self._several:
            os.kill(os.getpid(), signal.SIGTERM)  # to jax's notifier, which tells the others

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @property
    def cause(self) -> str:
        """What stopped the run, for the messages: the signal this process got, or, on one that
        got none, the SIGTERM that jax's notifier passed on from another."""
        return f"{self.signal_name or 'SIGTERM'} to a process"

    def reached(self, step: int) -> bool:
        """Called after every step (or batch), with its number, by every process; the numbers
        grow by one from call to call."""
        if self._several:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.signal_name is not None

    def close(self) -> None:
        """Puts back the handlers that were there before."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
