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


def test_the_loop_reports_each_window_after_validation_over_its_own_steps(monkeypatch):
    """`_loop` with fake steps, data and validation on a fake clock: 8 steps, epochs of 3
    (validation after steps 3 and 6, taking 100 s each), a log every 4 steps. Each logged
    window covers only the steps after the validation inside it."""
    from types import SimpleNamespace

    import numpy as np

    from vmp_jax.train import loop

    clock = FakeClock()
    for module in (log_window, input_wait):
        monkeypatch.setattr(module.time, "perf_counter", clock)

    def batches():
        while True:
            clock.now += 0.5  # waiting for input
            yield {"video": np.zeros((8, 1)), "skipped": np.zeros(8, bool)}

    def train_step(state, batch):
        clock.now += 1.5  # the step itself
        return state, {"loss": 1.0, "accuracy": 0.5, "grad_norm": 1.0, "lr": 0.1, "nonfinite": 0}

    def validate(s, state, eval_step):
        clock.now += 100.0
        return {"top1": 1.0, "top5": 1.0}

    monkeypatch.setattr(loop, "_validate", validate)
    monkeypatch.setattr(loop, "device_batch", lambda batch, mesh, keys: batch)
    train = SimpleNamespace(max_nonfinite=10, log_every=4, eval_every=1, save_every=0)
    s = SimpleNamespace(
        config=SimpleNamespace(train=train),
        total_steps=8,
        steps_per_epoch=3,
        val_source=object(),
        trainer=SimpleNamespace(mesh=None),
        ava=False,
    )
    logged = []
    log = SimpleNamespace(write=lambda *record: logged.append(record), sync=lambda: None)
    ckpt = SimpleNamespace(save=lambda *args, **kwargs: None, latest=lambda: None, metric="top1")
    preempt = SimpleNamespace(reached=lambda done: False, cause="")
    loop._loop(s, None, batches(), train_step, None, ckpt, log, 0, True, preempt)
    windows = [
        (step, r["clips_per_s"], r["input_wait"]) for step, split, r in logged if split == "train"
    ]
    # step 4: one step of 2 s (0.5 waiting) since the validation after step 3; step 8: two
    # steps of 2 s since the validation after step 6
    assert windows == [(4, 8 / 2.0, 0.5 / 2.0), (8, 16 / 4.0, 1.0 / 4.0)]
