"""The preemption watch of one process on its own: SIGTERM and SIGINT ask for a stop after the
step, a second signal of the kind goes to the handler there before (by default: stop at once),
and the previous handlers come back; a preempted `loop.train` raises once its checkpoint is
saved."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.shm_watch import running
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


# A training process's loader with 2 Grain workers (the tiny run's pipeline). A SIGINT to its
# process group (Ctrl-C) comes while the workers start (a timer's, 0.3 s into the first batch:
# Python and the imports take longer); the loader records it, as `Preemption` would, takes 2
# batches, and prints its workers' pids and whether it got the signal.
LOADER = f"""
import multiprocessing, os, signal, sys, threading, time
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.tiny_run import tiny_overrides
from vmp_jax.data import pipeline
from vmp_jax.experiment import REPO_ROOT, load_config
config = load_config(REPO_ROOT / "configs" / "demo.py",
                     tiny_overrides(sys.argv[1], data__num_workers=2))
asked = []
signal.signal(signal.SIGINT, lambda *_: asked.append(1))
data = iter(pipeline.train_dataset(config))
threading.Timer(0.3, os.killpg, (0, signal.SIGINT)).start()
next(data), next(data)
print(*[p.pid for p in multiprocessing.active_children()], bool(asked), flush=True)
time.sleep(300)
"""


def test_loader_workers_leave_signals_to_the_training_process_and_end_with_it(
    motion_dataset, tmp_path
):
    """Ctrl-C's SIGINT to the whole process group (a cluster agent's SIGTERM alike: the whole
    run in tests/train/test_train_cli.py), even while the workers start: they go on serving,
    for the training process to finish its step and close them (the training tests check that
    nothing is leaked then).
    SIGKILL to the training process alone: nothing closes them, and the workers, deaf to
    SIGTERM, exit on their own instead of lingering as orphans."""
    err = tmp_path / "loader.err"  # the loader's stderr, in the assertions' messages
    with open(err, "w") as stderr:
        loader = subprocess.Popen(
            [sys.executable, "-c", LOADER, motion_dataset],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal or agent starts it
        )
    try:
        printed = loader.stdout.readline().split()  # the 2 workers' pids, then whether asked
        assert len(printed) == 3 and printed[2] == "True", (printed, err.read_text())
        workers = printed[:2]
        os.kill(loader.pid, signal.SIGKILL)
        loader.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(running(int(pid)) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(int(pid)) for pid in workers), err.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loader.pid, signal.SIGKILL)  # what is left (failing): not for the suite
        loader.communicate(timeout=60)
