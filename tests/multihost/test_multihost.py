"""Multi-process runs for real: P processes joined by jax.distributed on this machine, each
with its own fake CPU devices and Gloo collectives, started by `vmp launch`.

2 processes x 4 devices train to the parameters of 1 process x 8 devices; one process
SIGKILLed mid-run and all restarted end bit-identical to the uninterrupted run; a SIGTERM to the
launcher, or a SIGINT to one process, stops both at one step (training, saved, with Grain
workers) and a SIGTERM to one process at one batch (eval, nothing written); the launcher passes
its signals on and waits for the save; a 2-process eval writes the predictions of the 1-process
eval, once; bad cluster settings end in a clear error within a bounded time."""

import glob
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.multihost import every_process_caches
from tests.shm_watch import SharedMemoryWatch
from tests.tiny_run import complete_steps, final_state, tiny_overrides
from vmp_jax.engine.checkpoint import checkpoint_dir
from vmp_jax.engine.mixing import Mixing
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.multihost import launch
from vmp_jax.train import loop

DEMO = str(REPO_ROOT / "configs" / "demo.py")
LAUNCH = [sys.executable, "-m", "vmp_jax.cli", "launch"]
# `vmp` under `vmp launch`: every process writes the compilation cache (every_process_caches.py)
VMP = [sys.executable, every_process_caches.__file__]


def _settings(root: str, **extra) -> list[str]:
    # 6 steps (2 epochs of 3), mixing over the global batch, on a mesh whose fsdp axis spans both
    # processes: each holds, writes and reads only its half of the parameters (the damaged
    # checkpoint test relies on it: a shard that process 1 alone reads)
    return tiny_overrides(
        root,
        optim__epochs=2,
        mesh__data=1,
        mesh__fsdp=8,
        data__mixup=0.8,
        data__cutmix=1.0,
        **extra,
    )


# The preemption tests' loaders run Grain workers, as the recipes' do (8 there); the batches are
# the same as without (the runs they are compared with).
WORKERS = {"data__num_workers": 2}


# The runs share their compiled programs (the restarted run and the evals compile what an earlier
# run did), in both processes (VMP), which keeps these tests to a few minutes on two cores.
# `make test` runs each test file on one worker (--dist loadfile), so the module's fixtures are
# built once.
_CACHE_ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for every process these tests launch."""
    _CACHE_ENV["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    _CACHE_ENV["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def _launch(processes: int, command: list[str]) -> subprocess.Popen:
    devices = 8 // processes
    args = [*LAUNCH, "--processes", str(processes), "--devices-per-process", str(devices), "--"]
    return subprocess.Popen(
        args + command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **_CACHE_ENV},
    )


def _train(root: str, workdir: str, processes: int, **extra) -> str:
    run = _launch(
        processes,
        [*VMP, "train", "--config", DEMO, *_settings(root, **extra), "--workdir", workdir],
    )
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    return out


def _final_state(root: str, workdir: str):
    """The leaves of the workdir's latest state, restored in this (8-device) process."""
    return final_state(load_config(DEMO, _settings(root)), workdir)


@pytest.fixture(scope="module")
def two_process_run(motion_dataset, tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("two") / "run")
    out = _train(motion_dataset, workdir, processes=2)
    # The run's reports come from process 0 alone.
    assert re.search(r"^\[0\] val: top1", out, re.M) and not re.search(r"^\[1\] val", out, re.M)
    return workdir


def test_two_processes_train_as_one_process_of_eight_devices(
    motion_dataset, two_process_run, tmp_path
):
    # The mixing that must come out the same on 1 and 2 processes: both kinds are drawn.
    mixing = Mixing.from_config(load_config(DEMO, _settings(motion_dataset)))
    assert {mixing.kind(step) for step in range(6)} == {"mixup", "cutmix"}
    one = str(tmp_path / "one")
    _train(motion_dataset, one, processes=1)
    (two_leaves, two_step), (one_leaves, one_step) = (
        _final_state(motion_dataset, w) for w in (two_process_run, one)
    )
    assert two_step == one_step == 6
    for a, b in zip(two_leaves, one_leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def _train_until_first_checkpoint(root: str, workdir: str, **extra):
    """A 2-process run of `_settings`, once its first checkpoint (step 2) is complete: the
    launcher, its output so far and the processes' pids."""
    command = [*VMP, "train", "--config", DEMO, *_settings(root, **extra), "--workdir", workdir]
    run = _launch(2, command)
    pids, lines = {}, []
    deadline = time.monotonic() + 600
    while 2 not in complete_steps(workdir):
        if not select.select([run.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            run.kill()
            raise AssertionError("no first checkpoint in 600 s:\n" + "".join(lines))
        line = run.stdout.readline()
        assert line, "the run ended before its first checkpoint:\n" + "".join(lines)
        lines.append(line)
        if m := re.match(r"\[launch\] process (\d) of 2: pid (\d+)", line):
            pids[int(m[1])] = int(m[2])
    return run, "".join(lines), pids


def _resume_and_compare(
    root: str, workdir: str, straight: str, resumed_from: str, shm: str, **extra
) -> None:
    """The run resumed in `workdir` ends bit-identical to the uninterrupted `straight`, its
    processes (and their Grain workers, with `extra`'s data.num_workers) leaving nothing in
    /dev/shm (`shm`: the watch's folder) once it ends: the last validation's batch too, the
    last work of process 1."""
    with SharedMemoryWatch(shm) as watch:
        resumed = _train(root, workdir, processes=2, **extra)
    assert "leaked shared_memory" not in resumed, resumed
    assert watch.left() == []
    assert re.search(rf"^\[0\] resumed from .*/checkpoints/{resumed_from}$", resumed, re.M), resumed
    (got, step), (want, _) = (_final_state(root, w) for w in (workdir, straight))
    assert step == 6
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_process_killed_mid_run_in_a_bucket_resumes_bit_identical(
    gcs, motion_dataset, two_process_run, tmp_path
):
    """The workdir in the emulator's bucket (Orbax's multi-process checkpoints there, each
    process writing its shards and its iterator state): one process SIGKILLed after the
    first checkpoint, the launcher stops the other, the same command resumes bit-identical to
    the local run. (A local workdir's 2-process resume: the SIGTERM test below.)"""
    workdir = "gs://vmp-test/killed"
    run, lines, pids = _train_until_first_checkpoint(motion_dataset, workdir)
    os.kill(pids[1], 9)
    killed = time.monotonic()
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 128 + 9, lines + out  # the first failure: the kill
    # Process 0 catches SIGTERM (jax's preemption notifier): SIGKILLed after the short grace.
    assert time.monotonic() - killed < launch.PEER_FAILED_GRACE_S + 8
    assert "process 1 exited with 137: stopping the others" in out
    assert 6 not in complete_steps(workdir)  # it was mid-run
    _resume_and_compare(motion_dataset, workdir, two_process_run, "[2-5]", tmp_path / "shm")


def _stopped_at_one_step(workdir: str, out: str) -> str:
    """The step a stopped 2-process run says it saved at (process 0 says it), saved there."""
    stopped = re.search(
        r"^\[0\] vmp train: stopped after step (\d) of 6 \(SIGTERM to a process\)", out, re.M
    )
    assert stopped, out
    step = stopped[1]
    assert f"saved {checkpoint_dir(workdir)}/{step}; the same command resumes" in out
    assert os.path.isdir(os.path.join(checkpoint_dir(workdir), step))
    assert not re.search(r"^\[1\] vmp train: stopped", out, re.M)  # reports come from process 0
    # Grain's workers stopped by their processes (the resource tracker warns of any left)
    assert "leaked shared_memory" not in out, out
    return step


def test_a_sigterm_to_the_launcher_saves_every_process_at_one_step_and_exits_0(
    motion_dataset, two_process_run, tmp_path
):
    """A preempted machine: `vmp launch` passes its SIGTERM on to both processes, each
    with 2 Grain workers; both finish their step, save at the step jax's preemption sync point
    names and exit 0, and so does the launcher; the same command resumes bit-identical."""
    workdir = str(tmp_path / "preempted")
    with SharedMemoryWatch(tmp_path / "shm_stopped") as watch:
        run, lines, _ = _train_until_first_checkpoint(motion_dataset, workdir, **WORKERS)
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, lines + out
    assert watch.left() == []  # the preempted processes' workers and slots: nothing left
    step = _stopped_at_one_step(workdir, lines + out)
    _resume_and_compare(motion_dataset, workdir, two_process_run, step, tmp_path / "shm", **WORKERS)


def test_a_sigint_to_one_process_group_stops_every_process_at_one_step(
    motion_dataset, two_process_run, tmp_path
):
    """Ctrl-C in one host's terminal: SIGINT to process 1 and its Grain workers. Process 1
    hands it to jax's preemption notifier, which names one step for both (process 0 got no
    signal: it says SIGTERM, the notifier's); both save there and exit 0, and the workers
    leave it to their process."""
    workdir = str(tmp_path / "interrupted")
    with SharedMemoryWatch(tmp_path / "shm") as watch:
        run, lines, pids = _train_until_first_checkpoint(motion_dataset, workdir, **WORKERS)
        os.killpg(pids[1], signal.SIGINT)  # each process leads a process group of its own
        out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, lines + out
    assert watch.left() == []
    _stopped_at_one_step(workdir, lines + out)
    assert "KeyboardInterrupt" not in out, out


def _eval(root: str, checkpoint: str, out_dir: str, processes: int) -> str:
    command = [*VMP, "eval", "--config", DEMO, *_settings(root)]
    run = _launch(processes, command + ["--checkpoint", checkpoint, "--out", out_dir])
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    return out


def test_two_process_eval_writes_the_one_process_predictions_once(
    motion_dataset, two_process_run, tmp_path
):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _eval(motion_dataset, two_process_run, one, processes=1)
    out = _eval(motion_dataset, two_process_run, two, processes=2)
    assert len(re.findall(r"wrote predictions: ", out)) == 1 and "[0] wrote predictions" in out
    with (
        open(os.path.join(one, "predictions.csv")) as a,
        open(os.path.join(two, "predictions.csv")) as b,
    ):
        rows_one, rows_two = a.read().splitlines(), b.read().splitlines()
    assert len(rows_one) == 9  # the header and the 8 validation videos
    for x, y in zip(rows_one, rows_two, strict=True):
        *ids_x, scores_x = x.split(",", 3)
        *ids_y, scores_y = y.split(",", 3)
        assert ids_x == ids_y  # video id, label, prediction
        if scores_x.startswith("score"):
            assert scores_x == scores_y
        else:
            np.testing.assert_allclose(
                np.array(scores_x.split(","), float),
                np.array(scores_y.split(","), float),
                rtol=1e-5,
            )


# `vmp` whose process 1 sends itself a SIGTERM in its first eval step: a preempted host. The
# notice reaches the other process through the coordination service; the batch waits 2 s for
# it, as a notice amid a long evaluation would have (3 tiny batches end in a blink, and jax
# then names a sync point after the last).
SIGTERM_IN_EVAL = f"""
import os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.multihost.every_process_caches import install
from tests.tiny_run import sigterm_in_first_eval_step
from vmp_jax.cli import main
install()
if os.environ["JAX_PROCESS_ID"] == "1":
    sigterm_in_first_eval_step(wait_s=2)
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_to_one_process_stops_every_process_of_eval_after_one_batch(
    motion_dataset, two_process_run, tmp_path
):
    """Both processes stop after the batch jax's preemption sync point names (not in a
    collective the other left), write nothing and exit 0. The 24 training videos as the test
    set: 3 batches."""
    out_dir = str(tmp_path / "eval")
    command = [sys.executable, "-c", SIGTERM_IN_EVAL, "eval", "--config", DEMO]
    command += [*_settings(motion_dataset), f"--config.data.val_list={motion_dataset}/train.txt"]
    run = _launch(2, command + ["--checkpoint", two_process_run, "--out", out_dir])
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    said = r"^\[(\d)\] vmp eval: evaluation stopped after batch [12] \(SIGTERM to a process\)"
    stopped = re.findall(said, out, re.M)
    assert stopped == ["0"], out  # said once, by process 0 (not after the last batch: 3)
    assert not os.path.exists(out_dir) and "top-1" not in out


def _join(*flags: str, timeout: int = 5) -> subprocess.Popen:
    """`vmp eval` asked to join a run (it fails at joining, before touching its checkpoint)."""
    command = [sys.executable, "-m", "vmp_jax.cli", "eval", "--config", DEMO, "--checkpoint", "x"]
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        command + [*flags, "--join-timeout", str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _free_port() -> int:
    from vmp_jax.multihost.launch import free_port

    return free_port()


def test_an_unreachable_coordinator_is_an_error_naming_the_address():
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    run = _join("--coordinator", address, "--num-processes", "2", "--process-id", "1")
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 2, out
    assert f"nothing answers at the coordinator address {address}" in out
    assert "process 1 of 2" in out and time.monotonic() - start < 60


def test_mismatched_process_counts_are_an_error_naming_both():
    address = f"127.0.0.1:{_free_port()}"
    # Each reports the mismatch as soon as both have joined: the timeout only bounds how long
    # one waits for the other to start (a slow import on a busy machine took over 5 s).
    flags = ("--coordinator", address)
    first = _join(*flags, "--num-processes", "2", "--process-id", "0", timeout=120)
    second = _join(*flags, "--num-processes", "3", "--process-id", "1", timeout=120)
    outs = [p.communicate(timeout=200)[0] for p in (first, second)]
    for run, out in zip((first, second), outs, strict=True):
        assert run.returncode != 0, out
    assert "was started with --num-processes 3, but the coordinator" in outs[1]
    assert (
        "mismatched process counts: process 0 was started with --num-processes 2, "
        "process 1 with 3" in outs[0]
    )


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--num-processes", "2", "--process-id", "2", "--coordinator", "h:1"], "must be in 0..1"),
        (["--num-processes", "2"], "go together"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    ],
)
def test_bad_cluster_flags_are_errors(flags, message, capsys):
    """Checked before joining anything: in this process (the join itself: the tests above)."""
    from vmp_jax import cli

    argv = ["eval", "--config", DEMO, "--checkpoint", "x", *flags, "--join-timeout", "5"]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def _launch_python(code: str, processes: int = 2) -> tuple[int, str, float]:
    start = time.monotonic()
    run = _launch(processes, [sys.executable, "-c", code])
    out, _ = run.communicate(timeout=120)
    return run.returncode, out, time.monotonic() - start


def test_launch_gives_each_process_its_place_and_devices():
    code = (
        "import os; print(os.environ['JAX_PROCESS_ID'], os.environ['JAX_NUM_PROCESSES'], "
        "os.environ['JAX_COORDINATOR_ADDRESS'].startswith('127.0.0.1:'), "
        "os.environ['XLA_FLAGS'].split()[-1])"
    )
    code_, out, _ = _launch_python(code)
    assert code_ == 0, out
    for i in range(2):
        assert f"[{i}] {i} 2 True --xla_force_host_platform_device_count=4" in out


def test_launch_stops_the_others_when_one_fails_and_returns_its_code():
    code = (
        "import os, sys, time\n"
        "if os.environ['JAX_PROCESS_ID'] == '1': sys.exit(3)\n"
        "time.sleep(300)\n"
    )
    code_, out, elapsed = _launch_python(code)
    assert code_ == 3 and "process 1 exited with 3: stopping the others" in out
    assert elapsed < 60  # process 0 was stopped, not waited for


# A process of a run that saves for SAVE_S seconds on a SIGTERM or SIGINT, then exits 0 (or, with
# SAVE_S = -1, takes no notice); its "worker", in its process group as Grain's are, is its own
# to stop: the launcher's signal must not reach it.
SAVING = """
import signal, subprocess, sys, time
save_s = float(sys.argv[1])
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
def save(signum, _frame):
    time.sleep(max(save_s, 0.5))
    print("got", signal.Signals(signum).name, "worker running:", worker.poll() is None, flush=True)
    worker.kill()
    sys.exit(0)
if save_s >= 0:
    signal.signal(signal.SIGTERM, save)
    signal.signal(signal.SIGINT, save)
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def _launch_and_signal(save_s: float, grace_s: float, *signums) -> tuple[int, str, float]:
    """`launch.launch` of SAVING as 2 processes, in this process (no launcher to start); once
    both are ready, `signums` to this process, a second apart: the exit code, the output and
    the seconds from the first signal. Handlers that only record stand in for pytest's around
    it, should a signal come after `launch` put those back."""
    out, start, late = io.StringIO(), [], []

    def signal_when_ready():
        while out.getvalue().count("] ready\n") < 2 and not late:
            time.sleep(0.05)
        start.append(time.monotonic())
        for signum in signums:
            if not late:
                os.kill(os.getpid(), signum)
                time.sleep(1)

    previous = {s: signal.signal(s, lambda *_: late.append(1)) for s in signums}
    thread = threading.Thread(target=signal_when_ready)
    thread.start()
    try:
        command = [sys.executable, "-c", SAVING, str(save_s)]
        code = launch.launch(command, processes=2, devices_per_process=1, grace_s=grace_s, out=out)
    finally:
        late.append(1)
        thread.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code, out.getvalue(), time.monotonic() - start[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_launch_passes_a_signal_on_and_exits_0_once_every_process_has(signum):
    """A preempted machine (SIGTERM) or Ctrl-C: each process gets the signal, its workers do
    not; the launcher waits out their save (longer than a step) and exits 0 as they do."""
    code, out, _ = _launch_and_signal(2, 60, signum)
    assert code == 0, out
    for i in range(2):
        assert f"[{i}] got {signum.name} worker running: True" in out, out


@pytest.mark.parametrize("second", [False, True], ids=["grace", "second-signal"])
def test_launch_kills_processes_still_running_after_the_grace_or_a_second_signal(second):
    signums = (signal.SIGTERM, signal.SIGINT) if second else (signal.SIGTERM,)
    code, out, elapsed = _launch_and_signal(-1, 600 if second else 2, *signums)
    assert code == 128 + signal.SIGKILL, out
    assert ("a second signal: killing" if second else "2 s passed: killing") in out
    assert elapsed < 60


@pytest.mark.parametrize(
    "args,message",
    [
        (["--processes", "2", "--"], "give the command to launch"),
        (["--processes", "0", "--", "true"], "must be at least 1"),
    ],
)
def test_launch_bad_arguments(args, message):
    run = subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr


def test_resuming_with_another_process_count_is_an_error_saying_so(
    motion_dataset, two_process_run, tmp_path
):
    workdir = str(tmp_path / "copy")
    shutil.copytree(two_process_run, workdir)
    config = load_config(DEMO, [*_settings(motion_dataset), "--config.optim.epochs=3"])
    with pytest.raises(ValueError, match="data iterator states of 2 processes, this run has 1"):
        loop.train(config, workdir)


def test_a_checkpoint_damaged_on_one_process_is_moved_aside_by_every_process(
    motion_dataset, two_process_run, tmp_path
):
    """Damage that process 1 alone meets, of both kinds: at step 6 the largest file of its OCDBT
    data (`state/ocdbt.process_1/d/`, the parameter shards process 1 wrote and alone reads, the
    fsdp axis spanning the processes) cut in half; at step 4 its iterator state deleted. Every
    process reads a step on its own, then all exchange what happened: both move steps 6 and 4
    aside and resume from step 3 (the first epoch's end), ending bit-identical to the
    uninterrupted run, within a bounded time (before: process 1 stopped alone, process 0 waited
    in Orbax's barrier for 5 minutes)."""
    workdir = str(tmp_path / "damaged")
    shutil.copytree(two_process_run, workdir)
    checkpoints = checkpoint_dir(workdir)
    assert sorted(complete_steps(workdir)) == [3, 4, 6]  # every 2 steps, each epoch's end; keep 3
    shards = glob.glob(f"{checkpoints}/6/state/ocdbt.process_1/d/*")
    shard = max(shards, key=os.path.getsize)
    os.truncate(shard, os.path.getsize(shard) // 2)
    os.remove(f"{checkpoints}/4/data/process_1-of-2.json")
    command = [*VMP, "train", "--config", DEMO, *_settings(motion_dataset), "--workdir", workdir]
    run = _launch(2, command)
    try:
        out, _ = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        run.terminate()  # the launcher stops both processes
        pytest.fail("the processes hung: " + run.communicate(timeout=60)[0])
    assert run.returncode == 0, out
    for step, cause in ((6, ""), (4, "FileNotFoundError")):
        said = f"[0] checkpoint {checkpoints}/{step} does not restore (process 1: {cause}"
        assert said in out and "moved it aside" in out, out
        assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", str(step)))
    assert re.search(r"^\[0\] resumed from .*/checkpoints/3$", out, re.M), out
    (got, step), (want, _) = (_final_state(motion_dataset, w) for w in (workdir, two_process_run))
    assert step == 6
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
