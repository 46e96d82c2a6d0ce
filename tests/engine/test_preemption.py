"""The preemption watch of one process on its own: SIGTERM and SIGINT ask for a stop after the
step, a second signal of the kind goes to the handler there before (by default: stop at once),
and the previous handlers come back; a preempted `loop.train` raises once its checkpoint is
saved."""

import os
import signal

import pytest

from tests.tiny_run import tiny_overrides
from vmp_jax.engine import checkpoint
from vmp_jax.engine.preemption import Preempted, Preemption
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.train import loop


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_asks_for_a_stop_after_the_step(signum):
    before = signal.getsignal(signum)
    watch = Preemption()
    try:
        assert not watch.reached(1)
        os.kill(os.getpid(), signum)
        assert watch.reached(2) and watch.signal_name == signal.Signals(signum).name
    finally:
        watch.close()
    assert signal.getsignal(signum) is before


def test_a_second_sigint_goes_to_the_handler_there_before():
    """The first SIGINT asks for a stop; the second is the handler's that was there before
    (Python's KeyboardInterrupt, unless a program set another): one set here, so that the test
    does not depend on what the worker process had."""
    received = []
    outer = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        before = signal.getsignal(signal.SIGINT)
        watch = Preemption()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            assert watch.reached(1) and received == []
            os.kill(os.getpid(), signal.SIGINT)
            assert received == [signal.SIGINT]
        finally:
            watch.close()
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_preempted_run_raises_after_saving_so_nothing_takes_it_as_finished(
    motion_dataset, tmp_path, monkeypatch
):
    """`loop.train` raises Preempted once the checkpoint is saved: `vmp ablate` and the
    diagnostics suite then stop instead of evaluating a half-trained run as a finished one."""
    monkeypatch.setattr(Preemption, "reached", lambda self, step: step == 2)
    config = load_config(REPO_ROOT / "configs" / "demo.py", tiny_overrides(motion_dataset))
    workdir = str(tmp_path / "run")
    with pytest.raises(Preempted, match=r"stopped after step 2 of 12 \(SIGTERM to a process\)"):
        loop.train(config, workdir, echo=loop.silent)
    assert sorted(os.listdir(checkpoint.checkpoint_dir(workdir))) == ["2"]
