"""`vmp train`, `vmp eval`, `vmp compare`, `vmp ablate`: the main job."""

import argparse


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


def add(subparsers) -> None:
    _add_train_commands(subparsers)
