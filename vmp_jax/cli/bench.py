"""`vmp bench-scan`, `vmp bench-data` and `vmp bench-train`: the benchmarks, as commands."""

import argparse

from vmp_jax.bench import DEFAULT_DATA_CONFIG, DEFAULT_LENGTHS


def scan_blocks(text: str):
    """argparse type of --blocks: 'q,c,w[,s[,g[,t]]]' as a `ScanBlocks`."""
    from vmp_jax.ssm import ScanBlocks

    try:
        return ScanBlocks.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
        blocks=args.blocks,
        repeats=args.repeats,
        max_temp_gib=args.max_temp_gib,
    )
    return 0


def _add_bench_scan(subparsers) -> None:
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
    p.add_argument(
        "--blocks",
        type=scan_blocks,
        default=None,
        help="tiling of chunked and pallas: chunk,channel-block,warps[,sub-chunk] "
        "(default: ScanBlocks' 16,32,4,2)",
    )
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    p.add_argument(
        "--max-temp-gib",
        type=float,
        default=8.0,
        help="compile but do not run programs needing more temp memory than this",
    )
    p.set_defaults(func=_bench_scan)


def _bench_data(args: argparse.Namespace) -> int:
    import json

    from vmp_jax.bench import data

    result = data.run(
        folder=args.folder,
        workers=args.workers,
        batches=args.batches,
        batch_size=args.batch_size,
        videos=args.videos,
        config_path=args.config,
        overrides=args.overrides,
        bucket_clips=args.bucket,
        echo=(lambda _: None) if args.json else print,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


def _add_bench_data(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-data",
        help="training-pipeline clips/s per source (video files, frame store)",
        description="Times a recipe's training pipeline (sample, read, decode, crop, flip, "
        "RandAugment, erasing, repeated augmentation) per source: the video files and a frame "
        "store packed from them (vmp make-frames defaults), for each worker count, and where "
        "a clip's CPU time goes (read, decode, crop, augment, and the canvas of "
        "data.augment_on=device). Videos: --videos DIR (any "
        "folder of yours) or generated 10 s 428x320 H.264 ones (libx264 defaults), written to "
        "--folder once; the store is packed under --folder once. Ratios come from one run. "
        "Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--videos", default=None, help="a folder of your videos (any depth)")
    p.add_argument("--folder", default="data/bench-320p", help="where videos and stores are cached")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--batches",
        type=int,
        default=64,
        help="timed batches once the pipeline has started (64: a row of 16 moves by several "
        "percent from run to run)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--config", default=str(DEFAULT_DATA_CONFIG))
    p.add_argument(
        "--bucket",
        type=int,
        default=0,
        metavar="CLIPS",
        help="instead: requests and bytes per clip of CLIPS clips per source read from a bucket "
        "(a GCS emulator on 127.0.0.1; needs the dev extra's gcp-storage-emulator)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"rows": [...], "breakdown": [...], "device_augment_ms_per_clip": ...}',
    )
    p.set_defaults(func=_bench_data, accepts_overrides=True)


def _bench_train(args: argparse.Namespace) -> int:
    from vmp_jax.bench import train
    from vmp_jax.experiment import load_config

    config = load_config(args.config, args.overrides)
    timing = dict(num_steps=args.steps, warmup=args.warmup, batches=args.batches)
    baseline = None
    if train.is_ava(config):  # first: its peak memory is its own (the device's is per process)
        twin_out = args.out and f"{args.out}/classify"
        baseline = train.run(train.classification_twin(config), **timing, out=twin_out)
    result = train.run(config, **timing, out=args.out)
    print(train.format_table(config, result, baseline))
    if args.out:
        also = f" (the classification twin's under {args.out}/classify)" if baseline else ""
        print(f"wrote {args.out}/metrics.jsonl and {args.out}/curves.png{also}")
    return 0


def _add_bench_train(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-train",
        help="train-step time, clips/s, memory and loss curve on in-memory synthetic clips",
        description="Runs a config's train step (the one `vmp train` runs) for --steps steps "
        "on generated motion clips held on the devices (no decoding), with the recipe's "
        "schedule compressed to the run. Prints compile time, step time, clips/s, compiled "
        "temp and peak device memory, and the loss. An AVA config (model.task=ava) is timed beside "
        "its classification twin (same backbone, clips, batch, dtype and scan, the head a "
        "linear layer on the CLS token), in the same process with the same steps: both "
        "columns and the ratio of their median step times. Overrides: --config.KEY=VALUE (e.g. "
        "--config.data.batch_size=32 --config.model.dtype=bfloat16).",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--out", default=None, help="folder for metrics.jsonl and curves.png")
    p.set_defaults(func=_bench_train, accepts_overrides=True)


def _bench_compile(args: argparse.Namespace) -> int:
    from vmp_jax.bench import compile as bench_compile

    bench_compile.run(args.config, args.overrides, batch=args.batch, repeats=args.repeats)
    return 0


def _add_bench_compile(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-compile",
        help="train-step compile time with the blocks looped and scanned (model.scan_layers)",
        description="Traces, lowers and compiles a config's train step (the one `vmp train` "
        "jits) on abstract arguments for this machine's devices, once with the blocks in a "
        "Python loop and once as lax.scans, and prints the seconds of each phase, the ratio "
        "and the compiled temp memory. Nothing is run. Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
    p.add_argument("--repeats", type=int, default=1, help="compiles per layout, fastest kept")
    p.set_defaults(func=_bench_compile, accepts_overrides=True)


def _bench_ava_eval(args: argparse.Namespace) -> int:
    import json

    from vmp_jax.bench import ava

    figures = ava.run(args.folder, echo=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


def _add_bench_ava_eval(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-ava-eval",
        help="time vmp ava-eval on files of AVA validation's size",
        description="Writes (once, under --folder) a ground truth and a detections CSV of AVA "
        "v2.2 validation's size (64 videos x 897 keyframes, about 115k persons with 1-3 of the "
        "60 evaluated actions each, 50 (box, action) detections per keyframe) and times "
        "`vmp ava-eval`'s reading and scoring of them in this process.",
    )
    p.add_argument("--folder", default="data/bench-ava", help="where the files are cached")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_bench_ava_eval)


def add(subparsers) -> None:
    _add_bench_scan(subparsers)
    _add_bench_data(subparsers)
    _add_bench_train(subparsers)
    _add_bench_compile(subparsers)
    _add_bench_ava_eval(subparsers)
