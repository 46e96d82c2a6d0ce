"""`vmp launch`: a multi-process run on one machine, started as a cluster would start it.

Process i of P gets JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES and
JAX_PROCESS_ID, and devices of its own: K fake CPU devices (`--xla_force_host_platform_device_
count`), or on a GPU machine the i-th group of K GPUs (CUDA_VISIBLE_DEVICES). Their output is
printed line by line behind `[i] ` (less Gloo's connection messages). When a process fails,
the others are stopped (SIGTERM, then SIGKILL) and the launcher exits with the first failure's
code (128 + N for a process killed by signal N), so one dead host never leaves the rest
waiting in a collective. A process that has joined jax.distributed catches SIGTERM (jax's
preemption notifier) and goes on: stopped because another failed, it could only wait in a
collective, so it gets PEER_FAILED_GRACE_S before SIGKILL.

A SIGTERM or SIGINT to the launcher (a preempted machine, Ctrl-C) is passed on to the
processes it started, not to their process groups (Grain's workers are their process's to
stop): each saves at the step all stop after (`vmp_jax.engine.preemption`) and exits 0, and
so does the launcher. It waits as long as the save takes, up to `grace_s`, then SIGKILLs; a
second signal SIGKILLs at once.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

PLATFORMS = ("cpu", "gpu")
GRACE_S = 600  # the launcher stopped (SIGTERM, Ctrl-C): the longest wait for a step and save
PEER_FAILED_GRACE_S = 2  # another process failed: nothing collective can finish
# Gloo's C++ prints a line per connection it opens; they say nothing a user can act on.
NOISE = re.compile(
    r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. "
    r"Expected number of connected peer ranks is : \d+"
)


def free_port() -> int:
    """A TCP port nothing listens on now (the coordinator binds it moments later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(index: int, processes: int, devices: int, port: int, platform: str) -> dict:
    """The environment of process `index`: the cluster's description and its devices."""
    env = dict(os.environ)
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(processes),
        JAX_PROCESS_ID=str(index),
        PYTHONUNBUFFERED="1",
        TQDM_MININTERVAL="5",  # progress bars arrive as prefixed lines: fewer of them
    )
    if platform == "cpu":
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(
            str(d) for d in range(index * devices, (index + 1) * devices)
        )
    return env


def resolve(command: list[str]) -> list[str]:
    """`vmp ...` runs with this interpreter, so the processes use the same installation."""
    if command and command[0] == "vmp":
        return [sys.executable, "-m", "vmp_jax.cli", *command[1:]]
    return command


def launch(
    command: list[str],
    *,
    processes: int,
    devices_per_process: int,
    platform: str = "cpu",
    port: int | None = None,
    grace_s: float = GRACE_S,
    out=None,
) -> int:
    """Runs `command` as `processes` processes of one run; returns 0 or the first failure's
    exit code. A signal to the launcher is handled as the module says (in the main thread)."""
    if not command:
        raise ValueError("give the command to launch after --, e.g. -- vmp train ...")
    if processes < 1 or devices_per_process < 1:
        raise ValueError(
            f"--processes ({processes}) and --devices-per-process ({devices_per_process}) "
            "must be at least 1"
        )
    if platform not in PLATFORMS:
        raise ValueError(f"--platform must be one of {PLATFORMS}, got {platform!r}")
    if grace_s < 0:
        raise ValueError(f"--grace-s must be at least 0, got {grace_s}")
    out = out or sys.stdout
    port = port or free_port()
    lock = threading.Lock()
    children, pumps = [], []
    with _Signals() as signals:
        try:
            for i in range(processes):
                child = subprocess.Popen(
                    resolve(command),
                    env=process_env(i, processes, devices_per_process, port, platform),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,  # its own process group: killed with what it started
                )
                children.append(child)
                _print(out, lock, f"[launch] process {i} of {processes}: pid {child.pid}")
                pump = threading.Thread(target=_pump, args=(child.stdout, f"[{i}] ", out, lock))
                pump.start()
                pumps.append(pump)
            return _wait(children, signals, grace_s, lambda line: _print(out, lock, line))
        finally:
            _stop(children, PEER_FAILED_GRACE_S)  # those still running: after a failure
            for pump in pumps:
                pump.join()


class _Signals:
    """SIGTERM and SIGINT to the launcher, recorded for `_wait` to act on (in the main thread
    alone: Python takes signal handlers there only)."""

    def __init__(self):
        self.received: list[int] = []
        self._previous = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *_) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, _frame) -> None:
        self.received.append(signum)


def _wait(children, signals: _Signals, grace_s: float, say) -> int:
    """Waits for all to exit 0 (0), or for the first failure (its exit code). The launcher's
    first signal is passed on to the processes still running; its second, or `grace_s`
    later, they are SIGKILLed (and fail)."""
    deadline, killed = None, False
    while True:
        codes = [child.poll() for child in children]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = failed[0]
            code = 128 - code if code < 0 else code  # killed by signal -code
            say(f"[launch] process {i} exited with {code}: stopping the others")
            return code
        if all(c == 0 for c in codes):
            return 0
        if signals.received and deadline is None:
            name = signal.Signals(signals.received[0]).name
            say(
                f"[launch] {name}: passed on to the processes; waiting up to {grace_s:g} s for "
                "them to save and exit (a second signal kills them now)"
            )
            _signal(children, signals.received[0], group=False)
            deadline = time.monotonic() + grace_s
        late = deadline is not None and time.monotonic() > deadline
        if (len(signals.received) > 1 or late) and not killed:
            why = "a second signal" if len(signals.received) > 1 else f"{grace_s:g} s passed"
            say(f"[launch] {why}: killing the processes still running (SIGKILL)")
            _signal(children, signal.SIGKILL, group=True)
            killed = True
        time.sleep(0.1)


def _signal(children, signum: int, *, group: bool) -> None:
    """`signum` to each process still running, or to its process group."""
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(child.pid, signum)
                else:
                    child.send_signal(signum)


def _stop(children, grace_s: float) -> None:
    """SIGTERM to every process still running, SIGKILL to the process groups of those still
    running `grace_s` later."""
    _signal(children, signal.SIGTERM, group=True)
    deadline = time.monotonic() + grace_s
    while any(c.poll() is None for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(children, signal.SIGKILL, group=True)
    for child in children:
        child.wait()


def _pump(stream, prefix: str, out, lock) -> None:
    for line in stream:
        line = NOISE.sub("", line).rstrip()
        if line:
            _print(out, lock, prefix + line)
    stream.close()


def _print(out, lock, line: str) -> None:
    with lock:
        print(line, file=out, flush=True)
