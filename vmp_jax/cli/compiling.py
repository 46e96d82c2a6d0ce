"""`vmp compile kernels|train|table --target T`: compile for any accelerator on a machine
without one, and report what the compile says. GPU targets (h100, a100) are `vmp
gpu-compile`'s; TPU targets (v4, v5e, v5p, v6e) compile with libtpu (vmp_jax.tpucompile)."""

import argparse
import json

from vmp_jax.cli import gpu
from vmp_jax.gpucompile.targets import TARGETS as GPU_TARGETS
from vmp_jax.tpucompile.targets import TARGETS as TPU_TARGETS

ALL_TARGETS = sorted(GPU_TARGETS) + list(TPU_TARGETS)


def _kernels(args: argparse.Namespace) -> int:
    if args.target in GPU_TARGETS:
        return gpu.kernels(args)
    from vmp_jax.ssm import ScanBlocks
    from vmp_jax.tpucompile import report

    shape = (args.batch, args.length, args.dim, args.state)
    result = report.compile_kernels(args.target, shape, args.blocks or ScanBlocks(), args.variant)
    print(json.dumps(result, indent=1) if args.json else report.format_kernels(result))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.target in GPU_TARGETS:
        if args.topology:
            raise ValueError("--topology is for TPU targets; a GPU target takes --devices")
        return gpu.train(args)
    if args.devices is not None:
        raise ValueError("--devices is for GPU targets; a TPU target takes --topology")
    from vmp_jax.tpucompile import report

    figures = report.compile_train(
        args.config, args.overrides, args.target, args.topology, args.per_device_batch
    )
    print(json.dumps(figures.as_json(), indent=1) if args.json else report.format_train(figures))
    return 0 if figures.fits else 1


def _table(args: argparse.Namespace) -> int:
    from vmp_jax.gpucompile import table
    from vmp_jax.tpucompile import report, targets

    tpus = [t for t in args.targets if t in TPU_TARGETS]
    gpus = [t for t in args.targets if t in GPU_TARGETS]
    echo = lambda line: print(line, flush=True)  # noqa: E731
    estimate = not args.no_largest
    if gpus:
        print(table.HEADER, flush=True)
        for _ in table.rows(args.configs, gpus, args.devices, estimate=estimate, echo=echo):
            pass
    if tpus:
        print(table.TPU_HEADER, flush=True)
        places = lambda t: targets.table_topologies(t, args.hosts)  # noqa: E731
        rows = table.rows(
            args.configs,
            tpus,
            places,
            compile_train=report.compile_train,
            estimate=estimate,
            echo=echo,
        )
        for _ in rows:
            pass
    return 0


def add(subparsers) -> None:
    from vmp_jax.gpucompile.table import K400_CONFIGS

    p = subparsers.add_parser(
        "compile",
        help="compile the kernels or a config's train step for a GPU or TPU, on any machine",
        description="Compiles for an accelerator target on a machine without one, with XLA's "
        "own pipeline for it (CUDA: Triton and ptxas; TPU: libtpu and Mosaic), and reports "
        "what the compile says. The first use installs the target's compile toolchain into "
        "the virtual environment (CUDA about 220 MB, libtpu about 700 MB). Static figures, "
        "not timings.",
    )
    commands = p.add_subparsers(dest="what", required=True)
    k = commands.add_parser(
        "kernels",
        help="the selective-scan kernels at one scan shape",
        description="GPU: registers, spills, shared memory, occupancy and waves of the Triton "
        "kernels (as vmp gpu-compile kernels). TPU: whether Mosaic compiles the training "
        "pass's and the inference forward's kernels on one chip, their VMEM against the "
        "core's, their cost estimates and the programs' memory per chip.",
    )
    gpu.add_kernel_arguments(k, ALL_TARGETS)
    k.set_defaults(func=_kernels)
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
    t.add_argument("--target", required=True, choices=ALL_TARGETS)
    t.add_argument("--devices", type=int, default=None, help="GPU targets: GPUs (default 1)")
    t.add_argument("--topology", default=None, help="TPU targets: e.g. v5e:2x2, v5e:4x4")
    t.add_argument("--per-device-batch", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_train, accepts_overrides=True)
    m = commands.add_parser(
        "table",
        help="memory per device of every K400 recipe on GPUs or TPUs, largest batch",
        description="Compiles the train step of each config at the paper's per-device batch "
        "(16) for each target (GPUs: 1 and 8 of them; TPUs: one host and --hosts hosts) and "
        "prints one markdown row each: GiB per device, whether it fits, and the largest "
        "per-device batch that fits (memory is linear in the batch: a second compile at twice "
        "the batch for the first GPU count or topology; the others take its memory per clip). "
        "Minutes per row on a small CPU.",
    )
    m.add_argument("--configs", nargs="+", default=K400_CONFIGS)
    m.add_argument("--targets", nargs="+", choices=ALL_TARGETS, default=["v5e", "v5p", "v6e"])
    m.add_argument("--devices", nargs="+", type=int, default=[1, 8], help="GPU counts")
    m.add_argument("--hosts", type=int, default=4, help="TPU hosts of the multi-host row")
    m.add_argument("--no-largest", action="store_true", help="skip the second compile")
    m.set_defaults(func=_table)
