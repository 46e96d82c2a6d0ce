"""input_wait: the share of a log window's wall time spent blocked in the data iterator, the
first batch (worker start-up) left out, and one warning a run when it passes 20%."""

from vmp_jax.train import input_wait


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_share_of_waiting_and_one_warning(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(input_wait.time, "perf_counter", clock)

    def batches(delays):
        for delay in delays:
            clock.now += delay  # the iterator blocks this long
            yield delay

    warnings = []
    wait = input_wait.InputWait(warnings.append)
    data = batches([5.0, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5])
    for _ in range(5):
        wait.next(data)
    assert abs(wait.share(4.0) - 0.1) < 1e-9  # 0.4 s of 4 s: the first batch's 5 s not counted
    assert warnings == []
    wait.next(data), wait.next(data)
    assert abs(wait.share(2.0) - 0.5) < 1e-9
    assert len(warnings) == 1 and "input-bound: 50%" in warnings[0] and "make-frames" in warnings[0]
    assert wait.share(1.0) == 0.0  # a new window
    clock.now = 0.0
    wait.next(batches([3.0]))
    wait.share(1.0)
    assert len(warnings) == 1  # once a run
