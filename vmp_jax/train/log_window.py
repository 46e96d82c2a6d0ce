"""A log window's throughput figures: clips per second and the share of time spent waiting for
input, measured over the same steps and the same wall time.

The loop logs every `train.log_every` steps. Validation runs inside a window (at an epoch end
that is not a log step) and takes far longer than a step: the window restarts after it, its
clock, its clip count and its input wait together, so that no figure mixes steps from before
validation with the time after it.
"""

import time

from vmp_jax.train.input_wait import InputWait


class LogWindow:
    """Counts the clips of a window's steps and times its waits for input; `close()` gives the
    window's clips/s and input-wait share and starts the next window."""

    def __init__(self, warn):
        self._wait = InputWait(warn)
        self.restart()

    def restart(self) -> None:
        """Starts a new window now: what was measured so far is dropped."""
        self._start = time.perf_counter()
        self._clips = 0
        self._wait.restart()

    def next(self, iterator):
        """The next batch, the wait for it timed."""
        return self._wait.next(iterator)

    def count(self, clips: int) -> None:
        """Adds a step's clips (all processes' together) to the window."""
        self._clips += clips

    def close(self) -> tuple[float, float]:
        """(clips per second, share of the time spent waiting for input) of this process's
        window; the next window starts."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate, share = self._clips / elapsed, self._wait.share(elapsed)
        self.restart()
        return rate, share
