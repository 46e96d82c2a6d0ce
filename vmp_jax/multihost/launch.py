"""`vmp launch`: a multi-process run on one machine, started as a cluster would start it.

Process i of P gets JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES and
JAX_PROCESS_ID, and devices of its own: K fake CPU devices (`--xla_force_host_platform_device_
count`), or on a GPU machine the i-th group of K GPUs (CUDA_VISIBLE_DEVICES). Their output is
printed line by line behind `[i] ` (less Gloo's connection messages). When a process fails,
the others are stopped (SIGTERM, then SIGKILL) and the launcher exits with the first failure's
code (128 + N for a process killed by signal N), so one dead host never leaves the rest
waiting in a collective. A process that has joined jax.distributed catches SIGTERM (jax's
preemption notifier) and goes on: stopped because another failed, it could only wait in a
collective, so it gets a short grace before SIGKILL; stopped because the launcher was, it gets
STOP_GRACE_S.
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
STOP_GRACE_S = 10  # the launcher stopped (SIGTERM, Ctrl-C): time to finish a step
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
    out=None,
) -> int:
    """Runs `command` as `processes` processes of one run; returns 0 or the first failure's
    exit code."""
    if not command:
        raise ValueError("give the command to launch after --, e.g. -- vmp train ...")
    if processes < 1 or devices_per_process < 1:
        raise ValueError(
            f"--processes ({processes}) and --devices-per-process ({devices_per_process}) "
            "must be at least 1"
        )
    if platform not in PLATFORMS:
        raise ValueError(f"--platform must be one of {PLATFORMS}, got {platform!r}")
    out = out or sys.stdout
    port = port or free_port()
    lock = threading.Lock()
    children, pumps = [], []
    for i in range(processes):
        child = subprocess.Popen(
            resolve(command),
            env=process_env(i, processes, devices_per_process, port, platform),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
        children.append(child)
        _print(out, lock, f"[launch] process {i} of {processes}: pid {child.pid}")
        pump = threading.Thread(target=_pump, args=(child.stdout, f"[{i}] ", out, lock))
        pump.start()
        pumps.append(pump)
    grace = STOP_GRACE_S
    try:
        code = _wait(children, out, lock)
        grace = PEER_FAILED_GRACE_S
    finally:
        _stop(children, grace)
        for pump in pumps:
            pump.join()
    return code


def _wait(children, out, lock) -> int:
    """Waits for all to succeed, or for the first failure (its exit code)."""
    while True:
        codes = [child.poll() for child in children]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = failed[0]
            code = 128 - code if code < 0 else code  # killed by signal -code
            _print(out, lock, f"[launch] process {i} exited with {code}: stopping the others")
            return code
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)


def _stop(children, grace_s: float) -> None:
    """SIGTERM to every process still running, SIGKILL to those still running `grace_s` later."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signum)
        deadline = time.monotonic() + grace_s
        while any(c.poll() is None for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
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
