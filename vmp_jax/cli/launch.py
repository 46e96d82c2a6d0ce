"""`vmp launch`, and the flags by which `vmp train`, `vmp ablate` and `vmp eval` join a
multi-process run."""

import argparse

from vmp_jax.multihost.launch import GRACE_S


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """--coordinator / --num-processes / --process-id / --join-timeout."""
    group = parser.add_argument_group(
        "multi-process run",
        "one process per host; without these, the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
        "and JAX_PROCESS_ID variables, or SLURM's, describe the run (none: one process)",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's host and a port")
    group.add_argument("--num-processes", type=int, metavar="P")
    group.add_argument("--process-id", type=int, metavar="I")
    group.add_argument(
        "--join-timeout",
        type=int,
        default=300,
        metavar="S",
        help="seconds to wait for every process to join before giving up (default 300)",
    )


def join_cluster(args: argparse.Namespace) -> None:
    """Joins the run the flags (or the environment) describe, before anything touches jax."""
    from vmp_jax.multihost import join

    cluster = join.Cluster.from_flags(
        args.coordinator, args.num_processes, args.process_id, args.join_timeout
    )
    join.initialize(cluster)


def _launch(args: argparse.Namespace) -> int:
    from vmp_jax.multihost import launch

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return launch.launch(
        command,
        processes=args.processes,
        devices_per_process=args.devices_per_process,
        platform=args.platform,
        port=args.port,
        grace_s=args.grace_s,
    )


def add(subparsers) -> None:
    p = subparsers.add_parser(
        "launch",
        help="run a command as P processes of one multi-process run on this machine",
        description="Starts P processes of COMMAND (e.g. vmp train ...) as one JAX run: each "
        "with the coordinator's address, the process count and its id in the environment, and "
        "its own devices (K fake CPU devices, or its group of K GPUs). Output lines are "
        "prefixed with the process id; when one process fails, the others are stopped and "
        "its exit code is returned. A SIGTERM or SIGINT (Ctrl-C) to the launcher is passed on "
        "to the processes, which save at one step and exit 0 (and so does the launcher); a "
        "second one kills them.",
    )
    p.add_argument("--processes", type=int, required=True, metavar="P")
    p.add_argument("--devices-per-process", type=int, default=1, metavar="K")
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--port", type=int, help="the coordinator's port (default: a free one)")
    p.add_argument(
        "--grace-s",
        type=float,
        default=GRACE_S,
        metavar="S",
        help="after a SIGTERM or SIGINT passed on, the longest wait for the processes to save "
        f"and exit before SIGKILL (default {GRACE_S})",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=_launch)
