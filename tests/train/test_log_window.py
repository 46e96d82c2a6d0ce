"""A log window's clips/s and input wait cover the same steps and the same wall time: after
validation (which runs inside a window) the clock, the clip count and the wait restart
together."""

from tests.train.test_input_wait import FakeClock
from vmp_jax.train import input_wait, log_window


def test_validation_restarts_the_clock_the_clips_and_the_wait_together(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(log_window.time, "perf_counter", clock)
    monkeypatch.setattr(input_wait.time, "perf_counter", clock)

    def batches():
        while True:
            clock.now += 0.5  # each batch is waited for 0.5 s
            yield "batch"

    warnings = []
    window, data = log_window.LogWindow(warnings.append), batches()

    def steps(n: int, clips: int = 8, compute_s: float = 1.5):
        for _ in range(n):
            window.next(data)
            window.count(clips)
            clock.now += compute_s

    steps(3)  # 1.5 + 2 * 2 s: the first batch's wait is not counted
    clock.now += 100.0  # validation at an epoch end inside the window
    window.restart()
    steps(2)  # 4 s, of which 1 s waiting
    clips_per_s, share = window.close()
    assert clips_per_s == 16 / 4.0
    assert share == 1.0 / 4.0
    assert warnings == [
        "input-bound: 25% of the last 4.0 s went to waiting for batches"
        f" (over 20%); to feed the devices faster: {input_wait.REMEDIES}"
    ]
    steps(1)  # the next window: its own step alone
    assert window.close() == (8 / 2.0, 0.5 / 2.0)
