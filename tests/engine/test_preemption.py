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


# A training process's loader with 2 Grain workers (the tiny run's pipeline): it prints its
# workers' pids once the first batch is in, then, on a SIGTERM (recorded, as `Preemption`
# records it), takes one more batch, closes the iterator and exits 0.
LOADER = f"""
import multiprocessing, signal, sys, time
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.tiny_run import tiny_overrides
from vmp_jax.data import pipeline
from vmp_jax.experiment import REPO_ROOT, load_config
config = load_config(REPO_ROOT / "configs" / "demo.py",
                     tiny_overrides(sys.argv[1], data__num_workers=2))
asked = []
signal.signal(signal.SIGTERM, lambda *_: asked.append(1))
data = iter(pipeline.train_dataset(config))
next(data)
print(*[p.pid for p in multiprocessing.active_children()], flush=True)
while not asked:
    time.sleep(0.05)
next(data)
data.close()
print("closed", flush=True)
"""


def _start_loader(root: str) -> tuple[subprocess.Popen, list[int]]:
    """LOADER in a process group of its own (as a terminal or a cluster's agent starts it),
    once its workers run: the process and the workers' pids."""
    loader = subprocess.Popen(
        [sys.executable, "-c", LOADER, root],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers = [int(pid) for pid in loader.stdout.readline().split()]
    assert len(workers) == 2, loader.communicate(timeout=60)
    return loader, workers


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: an orphan's reaper may be slow)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_loader_workers_leave_a_sigterm_to_the_group_to_the_training_process(motion_dataset):
    """A SIGTERM to the whole process group (Ctrl-C's SIGINT alike): the workers go on serving
    until the training process closes the iterator, which stops them and frees their shared
    memory (Python's resource tracker warns at exit of any left)."""
    loader, workers = _start_loader(motion_dataset)
    os.killpg(loader.pid, signal.SIGTERM)
    out, err = loader.communicate(timeout=120)
    assert loader.returncode == 0 and out == "closed\n", err
    assert "leaked shared_memory" not in err, err
    assert not any(_running(pid) for pid in workers)


def test_loader_workers_exit_when_the_training_process_is_killed(motion_dataset):
    """SIGKILL to the training process alone: nothing closes the iterator; its workers, which
    ignore SIGTERM, exit on their own instead of lingering as orphans."""
    loader, workers = _start_loader(motion_dataset)
    os.kill(loader.pid, signal.SIGKILL)
    loader.wait(timeout=60)
    deadline = time.monotonic() + 30
    try:
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loader.pid, signal.SIGKILL)  # orphans left (failing): not for the suite
        loader.communicate()
