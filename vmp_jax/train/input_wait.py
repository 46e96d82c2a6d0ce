"""How much of training waits for input: the share of wall time a log window spends blocked in
the data iterator (`input_wait`, 0 to 1), logged with the window's other metrics.

The train step is dispatched asynchronously, so a run that is compute-bound spends its time
inside the step (or blocked on a full dispatch queue) and a run that is input-bound spends it
waiting for the next batch. The first batch of a run (starting the loader's workers, reading
the restored position) is not counted. Above WARN_ABOVE, a warning names the remedies, once a
run.
"""

import time

WARN_ABOVE = 0.2
REMEDIES = (
    "pack the videos into a frame store (`vmp make-frames`, data.source=frames), augment in "
    "the train step (data.augment_on=device), or raise data.num_workers (one per free core)"
)


class InputWait:
    """Times each `next(iterator)`; `share(elapsed)` gives the window's share and starts the
    next window."""

    def __init__(self, warn):
        self._warn = warn  # called with the message, once a run
        self._waited = 0.0
        self._first = True
        self._warned = False

    def next(self, iterator):
        start = time.perf_counter()
        batch = next(iterator)
        if not self._first:
            self._waited += time.perf_counter() - start
        self._first = False
        return batch

    def restart(self) -> None:
        """Forgets the wait measured so far (a new window starts)."""
        self._waited = 0.0

    def share(self, elapsed: float) -> float:
        share, self._waited = min(1.0, self._waited / max(elapsed, 1e-9)), 0.0
        if share > WARN_ABOVE and not self._warned:
            self._warned = True
            self._warn(
                f"input-bound: {share:.0%} of the last {elapsed:.1f} s went to waiting for "
                f"batches (over {WARN_ABOVE:.0%}); to feed the devices faster: {REMEDIES}"
            )
        return share
