"""Non-finite train steps, seen from the loop: each is logged with its step number and counted,
and `train.max_nonfinite` of them in a row stop the run (exit code 3).

The step itself (`engine.steps.make_train_step`) leaves the state unchanged when its loss,
gradients or updated weights are not all finite, so weights on disk are always finite; the
loop only reads the step's `nonfinite` flag. It reads it one step late, once the next step is
dispatched, so that the host never waits for the device just to look at it.
"""

from collections.abc import Callable


class NonFiniteSteps(RuntimeError):
    """Too many non-finite steps in a row; `vmp` exits with this code."""

    exit_code = 3


class Watch:
    """Counts the non-finite steps of a run and stops it after `limit` in a row."""

    def __init__(self, limit: int, echo: Callable[[str], None], last_checkpoint: Callable):
        if limit < 1:
            raise ValueError(f"train.max_nonfinite must be >= 1, got {limit}")
        self.limit, self.echo, self.last_checkpoint = limit, echo, last_checkpoint
        self.in_a_row = 0
        self.total = 0
        self._pending = None  # (step, its nonfinite flag on the device), not yet looked at

    def dispatched(self, step: int, flag) -> None:
        """Step `step` was dispatched with the flag `flag` (a device scalar); looks at the step
        before it, done by now."""
        self.flush()
        self._pending = (step, flag)

    def flush(self) -> None:
        """Looks at the last dispatched step (waiting for it): before a stop or the run's end."""
        if self._pending is None:
            return
        step, flag = self._pending
        self._pending = None
        if not int(flag):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        self.echo(
            f"step {step}: non-finite loss, gradients or weights: update skipped "
            f"({self.in_a_row} in a row, {self.total} in this run)"
        )
        if self.in_a_row >= self.limit:
            raise NonFiniteSteps(self._stop_message(step))

    def _stop_message(self, step: int) -> str:
        where = self.last_checkpoint()
        resume = (
            f"resume from the last checkpoint, {where}, with a lower learning rate "
            "(--config.optim.base_lr=...)"
            if where
            else "no checkpoint was written yet: start again with a lower learning rate "
            "(--config.optim.base_lr=...)"
        )
        return (
            f"step {step}: {self.in_a_row} non-finite steps in a row (train.max_nonfinite="
            f"{self.limit}), stopped; the weights are those of step {step - self.in_a_row}, "
            f"as every non-finite step left them unchanged; {resume}"
        )
