"""`vmp compile kernels|train|table --target T`: compile for any accelerator on a machine
without one, and report what the compile says: GPU targets (h100, a100) with XLA's CUDA
pipeline, TPU targets (v4, v5e, v5p, v6e) with libtpu (vmp_jax.compile). `vmp gpu-compile`,
its GPU half before, is an alias that says so."""

import argparse
import json
import sys

from vmp_jax.cli.bench import scan_blocks
from vmp_jax.compile.programs import TARGET_SHAPE
from vmp_jax.compile.recipes import K400_CONFIGS
from vmp_jax.compile.targets import FAMILIES, NAMES, family

ALIAS = "gpu-compile"  # `vmp compile`'s GPU half before it took TPU targets too


def _kernels(args: argparse.Namespace) -> int:
    from vmp_jax.ssm import ScanBlocks

    shape = (args.batch, args.length, args.dim, args.state)
    blocks = args.blocks or ScanBlocks()
    if family(args.target) == "tpu":
        from vmp_jax.compile.tpu import kernels as tpu_kernels

        result = tpu_kernels.compile_kernels(args.target, shape, blocks, args.variant)
        print(json.dumps(result, indent=1) if args.json else tpu_kernels.format_kernels(result))
        return 0 if result["compiled"] else 1
    from vmp_jax.compile.gpu import kernels

    figures, ptxas = kernels.compile_kernels(args.target, shape, blocks, args.variant)
    if args.json:
        out = {
            "target": args.target,
            "shape": list(shape),
            "blocks": list(blocks.as_tuple()),
            "variant": args.variant,
            "ptxas": ptxas,
            "kernels": [f.as_json() for f in figures],
        }
        print(json.dumps(out, indent=1))
    else:
        print(kernels.format_table(args.target, shape, blocks, args.variant, figures, ptxas))
    return 0


def _train(args: argparse.Namespace) -> int:
    from vmp_jax.compile import train

    if family(args.target) == "gpu" and args.topology is not None:
        raise ValueError("--topology is for TPU targets; a GPU target takes --devices")
    if family(args.target) == "tpu" and args.devices is not None:
        raise ValueError("--devices is for GPU targets; a TPU target takes --topology")
    place = args.topology if family(args.target) == "tpu" else args.devices
    figures = train.compile_train(
        args.config, args.overrides, args.target, place, args.per_device_batch
    )
    print(json.dumps(figures.as_json(), indent=1) if args.json else train.format_train(figures))
    return 0 if figures.fits else 1


def _table(args: argparse.Namespace) -> int:
    from vmp_jax.compile import table

    echo = lambda line: print(line, flush=True)  # noqa: E731
    table.print_table(
        args.configs,
        args.targets,
        args.devices,
        args.hosts,
        estimate=not args.no_largest,
        echo=echo,
    )
    return 0


def _deprecated(func):
    """`func`, first saying on stderr that `vmp gpu-compile` is now `vmp compile`."""

    def run(args: argparse.Namespace) -> int:
        print(
            f"vmp {ALIAS} is deprecated: it is now vmp compile {args.what} --target ... "
            f"(the same flags; TPU targets too)",
            file=sys.stderr,
        )
        return func(args)

    return run


def add_kernel_arguments(parser) -> None:
    """The flags of a kernels compile: target, scan shape (default: the kernels' tuning shape),
    blocks, variant, --json."""
    b, length, d, n = TARGET_SHAPE
    parser.add_argument("--target", required=True, choices=NAMES)
    parser.add_argument("--batch", type=int, default=b)
    parser.add_argument("--length", type=int, default=length)
    parser.add_argument("--dim", type=int, default=d)
    parser.add_argument("--state", type=int, default=n)
    parser.add_argument(
        "--blocks",
        type=scan_blocks,
        help="q,c,w[,s[,g[,t]]]: chunk, channels, warps, sub-chunk, segments, TPU channels",
    )
    parser.add_argument("--variant", default="sequential", help="sequential or associative")
    parser.add_argument("--json", action="store_true")


def _add_command(subparsers, name: str, wrap=lambda func: func, **kwargs) -> None:
    """`vmp compile` (or its alias `name`, whose commands run through `wrap`)."""
    p = subparsers.add_parser(name, **kwargs)
    commands = p.add_subparsers(dest="what", required=True)
    k = commands.add_parser(
        "kernels",
        help="the selective-scan kernels at one scan shape",
        description="GPU: registers, spills, shared memory, occupancy and waves of the Triton "
        "kernels. TPU: whether Mosaic compiles the training pass's and the inference "
        "forward's kernels on one chip (exit 1 when not), their VMEM against the core's, "
        "their cost estimates and the programs' memory per chip.",
    )
    add_kernel_arguments(k)
    k.set_defaults(func=wrap(_kernels))
    t = commands.add_parser(
        "train",
        help="whether a config's train step compiles and fits on a target",
        description="Compiles the train step vmp train jits (same function, shardings, dtype, "
        "remat and scan algorithm) for --devices GPUs of a GPU target on one host, or for "
        "every chip of a TPU --topology (default one host: v5e:2x2, v5p:2x2x1, v6e:2x2, "
        "v4:2x2x1; several hosts, e.g. v5e:4x4, give the multi-process program), and prints "
        "the memory per device and whether it fits; exit 1 when it does not. The per-device "
        "batch is data.batch_size / devices unless --per-device-batch is given. Overrides: "
        "--config.KEY=VALUE.",
    )
    t.add_argument("--config", required=True)
    t.add_argument("--target", required=True, choices=NAMES)
    t.add_argument("--devices", type=int, default=None, help="GPU targets: GPUs (default 1)")
    t.add_argument("--topology", default=None, help="TPU targets: e.g. v5e:2x2, v5e:4x4")
    t.add_argument("--per-device-batch", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=wrap(_train), accepts_overrides=True)
    m = commands.add_parser(
        "table",
        help="memory per device of configs (default: every K400 recipe) on GPUs or TPUs, "
        "largest batch",
        description="Compiles the train step of each config (--configs: the K400 recipes by "
        "default; any config, AVA detectors included) at the paper's per-device batch "
        "(16) for each target (GPUs: 1 and 8 of them; TPUs: one host and --hosts hosts) and "
        "prints one markdown row each: GiB per device, whether it fits, and the largest "
        "per-device batch that fits (memory is linear in the batch: a second compile at twice "
        "the batch for the first GPU count or topology; the others take its memory per clip). "
        "Minutes per row on a small CPU.",
    )
    default_targets = list(FAMILIES["gpu"] if name == ALIAS else ["v5e", "v5p", "v6e"])
    m.add_argument("--configs", nargs="+", default=K400_CONFIGS)
    m.add_argument("--targets", nargs="+", choices=NAMES, default=default_targets)
    m.add_argument("--devices", nargs="+", type=int, default=[1, 8], help="GPU counts")
    m.add_argument("--hosts", type=int, default=4, help="TPU hosts of the multi-host row")
    m.add_argument("--no-largest", action="store_true", help="skip the second compile")
    m.set_defaults(func=wrap(_table))


def add(subparsers) -> None:
    _add_command(
        subparsers,
        "compile",
        help="compile the kernels or a config's train step for a GPU or TPU, on any machine",
        description="Compiles for an accelerator target on a machine without one, with XLA's "
        "own pipeline for it (CUDA: Triton and ptxas; TPU: libtpu and Mosaic), and reports "
        "what the compile says. The first use installs the target's compile toolchain into "
        "the virtual environment (CUDA about 220 MB, libtpu about 700 MB). Static figures, "
        "not timings.",
    )
    _add_command(
        subparsers,
        ALIAS,
        _deprecated,
        help="deprecated: now vmp compile (--target h100|a100)",
        description="Deprecated: the same as vmp compile kernels|train|table --target ..., "
        "which takes the same flags and TPU targets too.",
    )
