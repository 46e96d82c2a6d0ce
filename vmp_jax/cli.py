"""The `vmp` command: one subcommand per user task."""

import argparse
import sys
from collections.abc import Sequence


def _bench_scan(args: argparse.Namespace) -> int:
    from vmp_jax.bench import scan

    scan.run(
        lengths=args.lengths,
        algorithms=args.algorithms,
        batch=args.batch,
        dim=args.dim,
        state=args.state,
        dtype=args.dtype,
        options=scan.Options(args.reverse, args.mask_diagonal, args.residual),
        repeats=args.repeats,
        max_temp_gib=args.max_temp_gib,
    )
    return 0


def _add_bench_scan(subparsers) -> None:
    from vmp_jax.bench.scan import DEFAULT_LENGTHS

    p = subparsers.add_parser(
        "bench-scan",
        help="time and memory of every selective-scan algorithm",
        description="Forward and forward+backward time and compiled temp memory of each scan "
        "algorithm, with speed-ups over the best XLA algorithm and the forward's fraction of "
        "its memory-bandwidth floor, all measured in the same run. Defaults: VMP's backward "
        "scan (reverse, masked diagonal, residual) at D=384, N=16, batch 2.",
    )
    p.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS))
    p.add_argument(
        "--algorithms",
        nargs="+",
        default=None,
        help="any of auto, reference, sequential, associative, chunked, pallas, "
        "pallas:sequential, pallas:associative (default: the XLA ones and auto, plus both "
        "Pallas variants on GPU)",
    )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dim", type=int, default=384, help="channels D (d_inner)")
    p.add_argument("--state", type=int, default=16, help="state size N")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    for flag in ("reverse", "mask-diagonal", "residual"):
        p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    p.add_argument(
        "--max-temp-gib",
        type=float,
        default=8.0,
        help="compile but do not run programs needing more temp memory than this",
    )
    p.set_defaults(func=_bench_scan)


def _model_config(args: argparse.Namespace):
    from vmp_jax.experiment import load_config, model_config

    config = load_config(args.config, args.overrides)
    return config, model_config(config)


def _params(args: argparse.Namespace) -> int:
    from vmp_jax.models.summary import params_report

    print(params_report(_model_config(args)[1]))
    return 0


def _flops(args: argparse.Namespace) -> int:
    from vmp_jax.models.summary import flops_report

    config, cfg = _model_config(args)
    print(flops_report(cfg, views=config.eval.num_clips * config.eval.num_crops))
    return 0


def _add_model_commands(subparsers) -> None:
    for name, func, text in (
        ("params", _params, "exact parameter count, total and per module group"),
        ("flops", _flops, "FLOPs of one view (XLA cost analysis) and of the multi-view test"),
    ):
        p = subparsers.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Overrides: --config.KEY=VALUE.",
        )
        p.add_argument(
            "--config", required=True, help="an experiment file, e.g. configs/k400_vmp_ti_f8.py"
        )
        p.set_defaults(func=func, accepts_overrides=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmp", description="VideoMambaPro in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_bench_scan(subparsers)
    _add_model_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [a for a in extra if a.startswith("--config.")]
    unknown = [a for a in extra if not a.startswith("--config.")]
    if unknown or (args.overrides and not getattr(args, "accepts_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    try:
        return args.func(args)
    except ValueError as error:
        print(f"vmp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
