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


def _bench_data(args: argparse.Namespace) -> int:
    from vmp_jax.bench import data

    data.run(
        folder=args.folder,
        workers=args.workers,
        batches=args.batches,
        batch_size=args.batch_size,
        config_path=args.config,
        overrides=args.overrides,
    )
    return 0


def _add_bench_data(subparsers) -> None:
    from vmp_jax.bench.data import DEFAULT_CONFIG

    p = subparsers.add_parser(
        "bench-data",
        help="training-pipeline clips/s on 320p H.264 video, per worker count",
        description="Times a recipe's full training pipeline (decode, sample, crop, flip, "
        "RandAugment, erasing, repeated augmentation, mixup/cutmix) on generated 10 s 428x320 "
        "H.264 videos (written to --folder once), for each worker count. Overrides: "
        "--config.KEY=VALUE.",
    )
    p.add_argument("--folder", default="data/bench-320p", help="where the videos are cached")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=8, help="timed batches after a warm-up one")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.set_defaults(func=_bench_data, accepts_overrides=True)


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


def _channel_range(text: str) -> tuple[int, int]:
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP, got {text!r}") from None
    return start, stop


def _similarity(args: argparse.Namespace) -> int:
    import dataclasses

    import jax
    from flax import nnx

    from vmp_jax.data import pipeline, sources
    from vmp_jax.models import similarity
    from vmp_jax.models.videomamba import VideoMamba

    config, cfg = _model_config(args)
    if args.checkpoint:
        model = _checkpoint_model(config, args.checkpoint)
    else:
        model = VideoMamba(cfg, rngs=nnx.Rngs(args.seed))
        model.eval()
    shape = (1, cfg.num_frames, cfg.img_size, cfg.img_size, cfg.channels)
    if args.video:
        settings = pipeline.ClipSettings.from_config(config)
        settings = dataclasses.replace(settings, num_clips=1, num_crops=1)
        video = pipeline.test_views(
            sources.VideoFile(args.video, 0, 0), settings
        )  # (1, T, S, S, 3)
    else:
        video = jax.random.normal(jax.random.key(args.seed), shape)
    result = similarity.layer_matrices(model, video, args.layer, args.channels)
    for path in similarity.save(result, args.out):
        print(f"wrote {path}")
    return 0


def _checkpoint_model(config, path: str):
    """The (eval-mode) model of a `vmp train` checkpoint: a workdir, its checkpoints/ or a step."""
    from vmp_jax.experiment import model_config
    from vmp_jax.train import optim, sharding
    from vmp_jax.train.checkpoint import restore_state
    from vmp_jax.train.state import Trainer

    # The optimiser's state layout does not depend on the schedule's length.
    tx = optim.make_optimizer(config, steps_per_epoch=1)
    mesh = sharding.make_mesh(config.mesh)
    trainer = Trainer(model_config(config), tx, mesh, ema_decay=config.optim.ema_decay)
    state, step = restore_state(path, trainer.abstract_placed())
    print(f"weights: {path} (step {step})")
    return trainer.model(state)


def _add_similarity(subparsers) -> None:
    p = subparsers.add_parser(
        "similarity",
        help="the paper's section 3 matrices M_f, M_b, masked M_b and their sum for one layer",
        description="Computes, for block --layer and d_inner channels --channels, the exact "
        "similarity matrices of the forward scan, the backward scan, the backward scan with its "
        "diagonal masked, and M_f + masked M_b (the reference algorithm, averaged over the "
        "channels), on a video file (centre clip and crop) or a random input; writes OUT.npz, "
        "one heatmap PNG per matrix and a 2x2 panel OUT.png. Weights: --checkpoint (a "
        "`vmp train` workdir or checkpoint), else the config's initialisation from --seed. "
        "Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a video file")
    source.add_argument("--random", action="store_true", help="a standard-normal input")
    p.add_argument("--checkpoint", help="a `vmp train` workdir or checkpoint (default: init)")
    p.add_argument("--layer", type=int, required=True, help="block index, 0-based")
    p.add_argument("--channels", type=_channel_range, default=(0, 8), help="START:STOP (0:8)")
    p.add_argument("--out", default="similarity", help="output prefix (default ./similarity)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_similarity, accepts_overrides=True)


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


def _size(text: str) -> tuple[int, int]:
    """'96' -> (96, 96); '428x320' (width x height) -> (320, 428)."""
    try:
        w, _, h = text.partition("x")
        return (int(h or w), int(w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected S or WxH, got {text!r}") from None


def _make_synthetic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vmp_jax.data import synthetic

    height, width = args.size
    spec = synthetic.Spec(
        args.out,
        args.classes,
        args.videos_per_class,
        args.frames,
        height,
        width,
        args.fps,
        args.val_fraction,
        args.seed,
    )
    synthetic.class_names(spec.classes)  # a bad --classes fails before any work
    with tqdm(total=spec.classes * spec.videos_per_class, unit="video") as bar:
        lists = synthetic.make_dataset(spec, workers=args.workers, progress=lambda _: bar.update())
    print(f"wrote {lists['train']} and {lists['val']} (data_root {args.out})")
    return 0


def _add_data_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "make-synthetic",
        help="write the generated motion dataset (H.264 MP4 files and list files)",
        description="Writes a labelled video dataset whose classes are motions (direction and "
        "order of moving shapes over panning textured backgrounds with distractors), in "
        "time-reversed pairs so that only temporal order separates them. Files: "
        "OUT/videos/<class>/*.mp4, OUT/train.txt, OUT/val.txt, OUT/classes.txt.",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=_size, default=(96, 96), help="S or WxH (default 96)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="encoding processes (all cores)")
    p.set_defaults(func=_make_synthetic)

    p = subparsers.add_parser(
        "data-check",
        help="run a config's input pipeline; print batches, clips/s and skipped files",
        description="Reads N batches of the config's train (or val) pipeline and prints batch "
        "shapes, dtypes and value ranges, clips/s, and how many videos were skipped and why. "
        "Overrides: --config.KEY=VALUE (e.g. --config.data.train_list=FILE).",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.set_defaults(func=_data_check, accepts_overrides=True)

    p = subparsers.add_parser(
        "make-tfds",
        help="pack a config's list files into a TFDS ArrayRecord dataset",
        description="Builds the TFDS dataset video_list/NAME under OUT from data.train_list "
        "and data.val_list (encoded videos, labels, paths). Train on it with "
        "--config.data.source=tfds --config.data.tfds_name=video_list/NAME "
        "--config.data.data_root=OUT.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="the TFDS data_dir")
    p.add_argument("--name", required=True, help="the builder config name, e.g. k400")
    p.set_defaults(func=_make_tfds, accepts_overrides=True)


def _data_check(args: argparse.Namespace) -> int:
    from vmp_jax.data import check
    from vmp_jax.experiment import load_config

    check.run(load_config(args.config, args.overrides), split=args.split, batches=args.batches)
    return 0


def _make_tfds(args: argparse.Namespace) -> int:
    from vmp_jax.data import sources, tfds_builder
    from vmp_jax.experiment import load_config

    data = load_config(args.config, args.overrides).data
    lists = {
        data.train_split: sources.list_path(data, "train"),
        data.val_split: sources.list_path(data, "val"),
    }
    builder = tfds_builder.build(args.name, lists, data.data_root, args.out)
    print(f"built {builder.info.full_name} under {args.out}: {builder.info.splits}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.train import loop

    config = load_config(args.config, args.overrides)
    final = loop.train(config, args.workdir)
    for split, values in final.items():
        if isinstance(values, dict):
            print(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import os

    from vmp_jax.evaluate import multiview
    from vmp_jax.experiment import load_config
    from vmp_jax.train.checkpoint import workdir_of

    config = load_config(args.config, args.overrides)
    predictions, skipped, step = multiview.evaluate_checkpoint(
        config, args.checkpoint, ema=args.ema
    )
    summary = multiview.summary(predictions)
    out = args.out or os.path.join(workdir_of(args.checkpoint), "eval")
    names = _class_names(config)
    paths = multiview.write_report(predictions, out, names)
    views = config.eval.num_clips * config.eval.num_crops
    print(f"checkpoint step {step}, {summary['videos']} videos x {views} views ({skipped} skipped)")
    print(f"top-1 {summary['top1']:.4f}  top-5 {summary['top5']:.4f}")
    print(multiview.per_class_table(predictions, names))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _class_names(config):
    import os

    path = os.path.join(config.data.data_root or ".", "classes.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    return names if len(names) == config.model.num_classes else None


def _compare(args: argparse.Namespace) -> int:
    from vmp_jax.evaluate import metrics

    if args.counts:
        result = metrics.McNemar(*args.counts)
        names = ("A", "B")
    else:
        if len(args.predictions) != 2:
            raise ValueError("give two predictions files, or --counts")
        a, b = (metrics.read_csv(p) for p in args.predictions)
        result = metrics.mcnemar(a, b)
        names = tuple(args.predictions)
    print(result.table(*names))
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.train import ablate

    config = load_config(args.config, args.overrides)
    ablate.run(config, args.workdir, variants=args.variants)
    return 0


def _add_train_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a config; resumes from the workdir's latest checkpoint",
        description="Trains --config into --workdir (checkpoints/, metrics.jsonl, tensorboard/, "
        "curves.png); a workdir with checkpoints resumes from the latest. Overrides: "
        "--config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=_train, accepts_overrides=True)

    p = subparsers.add_parser(
        "eval",
        help="multi-view test of a checkpoint: top-1/5, per class, confusion, predictions CSV",
        description="Evaluates --checkpoint (a workdir, its checkpoints/ or one step directory) "
        "on data.val_list with eval.num_clips x eval.num_crops views per video; writes "
        "predictions.csv, per_class.csv and confusion.png to --out (default: the "
        "checkpoint's workdir/eval). Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.set_defaults(func=_eval, accepts_overrides=True)

    p = subparsers.add_parser(
        "compare",
        help="McNemar's test between two predictions files (the paper's section 5.4)",
        description="Pairs two `vmp eval` predictions files by video_id and prints the 2x2 "
        "table of correct/incorrect and McNemar's chi-square (no continuity correction) with "
        "its p-value; or takes the table's four counts directly.",
    )
    p.add_argument("predictions", nargs="*", help="PRED_A.csv PRED_B.csv")
    p.add_argument(
        "--counts",
        type=int,
        nargs=4,
        metavar=("BOTH", "ONLY_A", "ONLY_B", "NEITHER"),
        help="the table: both correct, only A correct, only B correct, both wrong",
    )
    p.set_defaults(func=_compare)

    from vmp_jax.train.ablate import VARIANTS

    p = subparsers.add_parser(
        "ablate",
        help="the paper's Table 5: VideoMamba, VMP w/o residual, VMP w/o masking, VMP",
        description="Trains and evaluates each variant with the same config, data and seed "
        "(in WORKDIR/<variant>, resumable) and prints one table. Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.set_defaults(func=_ablate, accepts_overrides=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmp", description="VideoMambaPro in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_bench_scan(subparsers)
    _add_bench_data(subparsers)
    _add_model_commands(subparsers)
    _add_similarity(subparsers)
    _add_data_commands(subparsers)
    _add_train_commands(subparsers)
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
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"vmp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
