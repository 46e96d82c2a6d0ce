"""`vmp gpu-compile kernels` and `vmp gpu-compile train`: compile for H100 or A100 GPUs on a
machine without one, and report what the compile says."""

import argparse
import json

from vmp_jax.cli.bench import scan_blocks


def kernels(args: argparse.Namespace) -> int:
    from vmp_jax.gpucompile import kernels
    from vmp_jax.ssm import ScanBlocks

    blocks = args.blocks or ScanBlocks()
    shape = (args.batch, args.length, args.dim, args.state)
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
        table = kernels.format_table(args.target, shape, blocks, args.variant, figures, ptxas)
        print(table)
    return 0


def train(args: argparse.Namespace) -> int:
    from vmp_jax.gpucompile import train as gpu_train

    devices = 1 if args.devices is None else args.devices
    figures = gpu_train.compile_train(
        args.config, args.overrides, args.target, devices, args.per_device_batch
    )
    text = gpu_train.format_result(figures)
    print(json.dumps(figures.as_json(), indent=1) if args.json else text)
    return 0 if figures.fits else 1


def _table(args: argparse.Namespace) -> int:
    from vmp_jax.gpucompile import table

    print(table.HEADER, flush=True)
    echo = lambda line: print(line, flush=True)  # noqa: E731
    rows = table.rows(
        args.configs, args.targets, args.devices, estimate=not args.no_largest, echo=echo
    )
    for _ in rows:
        pass
    return 0


def add_kernel_arguments(parser, targets) -> None:
    """The flags of a kernels compile: target, scan shape (default: the kernels' tuning shape),
    blocks, variant, --json."""
    from vmp_jax.gpucompile.kernels import TARGET_SHAPE

    b, length, d, n = TARGET_SHAPE
    parser.add_argument("--target", required=True, choices=targets)
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


def add(subparsers) -> None:
    from vmp_jax.gpucompile.targets import TARGETS

    p = subparsers.add_parser(
        "gpu-compile",
        help="compile the kernels or a config's train step for H100/A100 GPUs, on any machine",
        description="Compiles for a GPU target with XLA's own CUDA pipeline (Triton, ptxas) on "
        "a machine without a GPU, and reports what the compile says: registers, spills, "
        "occupancy and waves of the Pallas kernels, or whether a config's train step compiles "
        "and fits in memory. The first use installs the CUDA compile toolchain (about 220 MB) "
        "into the virtual environment. Static figures, not timings.",
    )
    commands = p.add_subparsers(dest="what", required=True)
    k = commands.add_parser(
        "kernels",
        help="the forward and backward selective-scan kernels at one scan shape",
        description="Compiles the Pallas forward and backward kernels (VMP's backward-scan "
        "options, bf16 activations, float32 delta) and prints per kernel: registers, spill "
        "bytes, shared memory, grid, threads, blocks per SM and their limit, occupancy and "
        "waves.",
    )
    add_kernel_arguments(k, sorted(TARGETS))
    k.set_defaults(func=kernels)
    t = commands.add_parser(
        "train",
        help="whether a config's train step compiles and fits on N GPUs of a target",
        description="Compiles the train step vmp train jits (same function, shardings, dtype, "
        "remat and scan algorithm) for --devices GPUs of --target on one host, and prints "
        "whether it compiled, the per-device memory and whether it fits; exit 1 when it does "
        "not. The per-device batch is data.batch_size / devices unless --per-device-batch "
        "is given. Overrides: --config.KEY=VALUE.",
    )
    t.add_argument("--config", required=True)
    t.add_argument("--target", required=True, choices=sorted(TARGETS))
    t.add_argument("--devices", type=int, default=1)
    t.add_argument("--per-device-batch", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=train, accepts_overrides=True)
    from vmp_jax.gpucompile.table import K400_CONFIGS

    m = commands.add_parser(
        "table",
        help="per-GPU memory of every K400 recipe on 1 and 8 H100/A100s, largest batch",
        description="Compiles the train step of each config at the paper's per-GPU batch (16) "
        "for each target and GPU count, and prints one markdown row each: GiB per GPU, "
        "whether it fits, and the largest per-GPU batch that fits (memory is linear in the "
        "batch: a second compile at twice the batch for the first GPU count; the others take "
        "its memory per clip). Minutes per row on a small CPU.",
    )
    m.add_argument("--configs", nargs="+", default=K400_CONFIGS)
    m.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=["h100", "a100"])
    m.add_argument("--devices", nargs="+", type=int, default=[1, 8])
    m.add_argument("--no-largest", action="store_true", help="skip the second compile")
    m.set_defaults(func=_table)
