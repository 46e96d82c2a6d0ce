"""The preemption watch of one process on its own: SIGTERM and SIGINT ask for a stop after the
step, a second signal of the kind stops at once, and the previous handlers come back."""

import os
import signal

import pytest

from vmp_jax.train.preemption import Preemption


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


def test_a_second_sigint_interrupts_at_once():
    watch = Preemption()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
