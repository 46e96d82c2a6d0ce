"""The `vmp` command: one subcommand per user task, grouped by area in this package."""

import argparse
import sys
from collections.abc import Sequence

from vmp_jax import xla_flags
from vmp_jax.cli import bench, compiling, data, evaluate, gpu, interop, launch, model, train
from vmp_jax.engine.preemption import Preempted
from vmp_jax.storage.access import StorageAccessError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmp", description="VideoMambaPro in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for area in (bench, model, data, train, launch, evaluate, interop, gpu, compiling):
        area.add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    xla_flags.apply()  # before any command starts jax
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [a for a in extra if a.startswith("--config.")]
    unknown = [a for a in extra if not a.startswith("--config.")]
    if unknown or (args.overrides and not getattr(args, "accepts_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    try:
        return args.func(args)
    except Preempted as stopped:  # a run saved where it stopped; an evaluation wrote nothing
        from vmp_jax.multihost import join

        if join.is_primary():
            print(f"vmp {args.command}: {stopped}", flush=True)
        return Preempted.exit_code
    except (ValueError, FileNotFoundError, RuntimeError, ImportError, StorageAccessError) as error:
        print(f"vmp {args.command}: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)  # 3: non-finite steps (vmp_jax.train.nonfinite)
