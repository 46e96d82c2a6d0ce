"""The `vmp` command: one subcommand per user task, grouped by area in this package."""

import argparse
import sys
from collections.abc import Sequence

from vmp_jax import xla_flags
from vmp_jax.cli import bench, compiling, data, evaluate, interop, launch, model, train
from vmp_jax.engine.preemption import Preempted
from vmp_jax.storage.access import StorageAccessError

# `vmp --help` lists the commands by group, in the order a user meets them; a new command
# names its group here (one not named is listed under "other commands", last).
GROUPS = {
    "prepare data": ("make-synthetic", "data-check", "make-tfds", "make-frames"),
    "train": ("train", "launch", "ablate"),
    "evaluate and predict": ("eval", "predict", "compare", "ava-eval"),
    "the model": ("params", "flops", "similarity"),
    "weights": ("export", "import", "parity"),
    "accelerators": ("compile", "gpu-compile"),
    "benchmarks": ("bench-data", "bench-train", "bench-scan", "bench-compile", "bench-ava-eval"),
}
OTHER = "other commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmp",
        description="VideoMambaPro in JAX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`vmp COMMAND --help` for its flags"
    )
    for area in (bench, model, data, train, launch, evaluate, interop, compiling):
        area.add(subparsers)
    parser.epilog = _grouped_commands(subparsers)
    return parser


def _grouped_commands(subparsers) -> str:
    """The commands' one-line helps under GROUPS' headings, in GROUPS' order, every registered
    command once (the ungrouped under OTHER); argparse's own list, in registration order, is
    dropped for it."""
    helps = {action.dest: action.help or "" for action in subparsers._choices_actions}
    subparsers._choices_actions.clear()  # argparse's list of them, replaced by this one
    grouped = {group: [c for c in names if c in helps] for group, names in GROUPS.items()}
    named = {c for names in GROUPS.values() for c in names}
    grouped[OTHER] = [c for c in helps if c not in named]
    width = max(map(len, helps)) + 2
    blocks = [
        "\n".join([f"{group}:", *(f"  {name:<{width}}{helps[name]}" for name in names)])
        for group, names in grouped.items()
        if names
    ]
    return "\n\n".join(blocks)


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
