"""Joining a multi-process run: one process per host (or per GPU group), as JAX clusters run.

The run is described, first match wins, by:
  1. flags: `--coordinator HOST:PORT --num-processes P --process-id I` (`Cluster.from_flags`);
  2. the variables `vmp launch` sets and JAX documents: JAX_COORDINATOR_ADDRESS,
     JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  3. SLURM (`srun`, one task per host, SLURM_NTASKS > 1) or Open MPI (`mpirun`,
     OMPI_COMM_WORLD_SIZE > 1), or the workers of a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES
     or TPU_PROCESS_ADDRESSES listing more than one host, as the TPU VM runtime and GKE set
     them): JAX's cluster detection reads the rest itself.
Otherwise the run is one process and there is nothing to join.

Joining is bounded. JAX's own wait for the coordinator ends in an abort with a C++ stack
trace, so a watchdog ends the process first, after `timeout_s`, with an error naming the
address and the counts. Once joined, the processes check that they agree on their number (a
process told P' != P would otherwise join and then hang at its first collective).
Processes other than 0 then log warnings and errors only, each line prefixed with its id.
"""

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import threading

import jax

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
SCHEDULERS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")  # > 1: a launcher JAX detects
TPU_WORKERS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")  # comma-separated hosts


def _tpu_pod_workers() -> int:
    """How many hosts the TPU pod slice this process runs on has (1 off a pod)."""
    for name in TPU_WORKERS:
        if value := os.environ.get(name):
            return len([host for host in value.split(",") if host.strip()])
    return 1


EXIT_CODE = 2  # what a process that could not join exits with


class JoinError(RuntimeError):
    """The processes of a run could not join or do not agree on the run's shape."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where process `process_id` of `num_processes` finds the coordinator (process 0's host)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = 300
    detected: bool = False  # started by a scheduler that JAX reads itself

    @classmethod
    def from_flags(cls, coordinator=None, num_processes=None, process_id=None, timeout_s=300):
        """From the flags if any is given, else from the environment."""
        if coordinator is None and num_processes is None and process_id is None:
            return cls.from_env(timeout_s)
        cluster = cls(coordinator, num_processes, process_id, timeout_s)
        cluster.validate()
        return cluster

    @classmethod
    def from_env(cls, timeout_s: int = 300) -> "Cluster":
        address, count, index = (os.environ.get(name) for name in ENV)
        if address is not None:
            for name, value in zip(ENV[1:], (count, index), strict=True):
                if value is None or not value.isdigit():
                    raise JoinError(f"JAX_COORDINATOR_ADDRESS is set: {name} must be too")
            cluster = cls(address, int(count), int(index), timeout_s)
            cluster.validate()
            return cluster
        detected = any(int(os.environ.get(name, "1")) > 1 for name in SCHEDULERS)
        return cls(timeout_s=timeout_s, detected=detected or _tpu_pod_workers() > 1)

    @property
    def multi_process(self) -> bool:
        return self.detected or (self.num_processes or 1) > 1

    def validate(self) -> None:
        given = (self.coordinator, self.num_processes, self.process_id)
        if None in given:
            raise JoinError(
                "--coordinator, --num-processes and --process-id go together "
                f"(got {given[0]!r}, {given[1]!r}, {given[2]!r})"
            )
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise JoinError(f"--coordinator must be HOST:PORT, got {self.coordinator!r}")
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise JoinError(
                f"process id {self.process_id} must be in 0..{self.num_processes - 1} "
                f"(--num-processes {self.num_processes})"
            )
        if self.timeout_s < 1:
            raise JoinError(f"the join timeout must be at least 1 s, got {self.timeout_s}")

    def describe(self) -> str:
        if self.coordinator is None:
            return "this process (SLURM or MPI task, or TPU pod worker)"
        return f"process {self.process_id} of {self.num_processes} (coordinator {self.coordinator})"


def initialize(cluster: Cluster | None = None) -> None:
    """Joins the run `cluster` (or the environment) describes, once, before any device is
    touched; a single-process run does nothing."""
    if jax.distributed.is_initialized():
        return
    cluster = Cluster.from_env() if cluster is None else cluster
    if not cluster.multi_process:
        return
    # CPU processes (tests, `vmp launch` on a laptop) exchange their collectives over gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    with _watchdog(cluster):
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=cluster.timeout_s + 60,  # the watchdog fires first
            shutdown_timeout_seconds=cluster.timeout_s,
        )
    _check_agreement(cluster)
    configure_logging()


def is_primary() -> bool:
    """Whether this process writes the run's files and prints its reports (process 0)."""
    return jax.process_index() == 0


def configure_logging() -> None:
    """Process 0 logs as usual; the others log warnings and errors only, prefixed with their
    id (Python logging and absl's, which Orbax and Grain use)."""
    if is_primary():
        return
    from absl import logging as absl_logging

    prefix = f"[process {jax.process_index()}] "
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(prefix + "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)


@contextlib.contextmanager
def _watchdog(cluster: Cluster):
    """Ends the process with a clear error if the block has not finished in time."""

    def give_up():
        print(f"vmp: error: {_join_failure(cluster)}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)

    timer = threading.Timer(cluster.timeout_s, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _join_failure(cluster: Cluster) -> str:
    """Why the join most likely did not complete, for the watchdog's message."""
    what = f"{cluster.describe()} could not join the run within {cluster.timeout_s} s"
    if cluster.coordinator is None:
        return what + ": check that every task of the job was started"
    if cluster.process_id != 0 and not _reachable(cluster.coordinator):
        return (
            f"{what}: nothing answers at the coordinator address {cluster.coordinator}; "
            "start process 0 there first, or correct --coordinator"
        )
    return (
        f"{what}: not all {cluster.num_processes} processes joined at {cluster.coordinator}; "
        "start every process, each with the same --coordinator and --num-processes "
        f"({cluster.num_processes} here)"
    )


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _check_agreement(cluster: Cluster) -> None:
    """Every process must have been told the number of processes that joined."""
    if cluster.num_processes is None:
        return  # JAX took the count from the scheduler itself
    from jax._src import distributed  # the coordination service's key-value store

    client, me = distributed.global_state.client, jax.process_index()
    client.key_value_set(f"vmp/num_processes/{me}", str(cluster.num_processes))
    joined = jax.process_count()
    if joined != cluster.num_processes:
        raise JoinError(
            f"process {me} was started with --num-processes {cluster.num_processes}, but "
            f"the coordinator at {cluster.coordinator} runs {joined} processes"
        )
    others = range(1, joined) if me == 0 else [0]
    for other in others:
        told = client.blocking_key_value_get(f"vmp/num_processes/{other}", cluster.timeout_s * 1000)
        if int(told) != cluster.num_processes:
            raise JoinError(
                f"mismatched process counts: process {me} was started with --num-processes "
                f"{cluster.num_processes}, process {other} with {told}"
            )
