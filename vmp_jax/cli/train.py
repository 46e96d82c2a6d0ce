"""`vmp train` and `vmp ablate`: the main job."""

import argparse

from vmp_jax.cli.launch import add_cluster_arguments, join_cluster
from vmp_jax.train.variants import VARIANTS

DIAGNOSTICS = "configs/diagnostics.py"


def _train(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.multihost import join
    from vmp_jax.train import loop

    config = load_config(args.config, args.overrides)
    join_cluster(args)
    final = loop.train(config, args.workdir)
    if not join.is_primary():
        return 0
    for split, values in final.items():
        if isinstance(values, dict):
            print(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import REPO_ROOT, load_config
    from vmp_jax.train import ablate

    if args.suite == "diagnostics":
        return _diagnostics(
            args, load_config(args.config or REPO_ROOT / DIAGNOSTICS, args.overrides)
        )
    if args.config is None:
        raise ValueError("--config is required (or --suite diagnostics)")
    config = load_config(args.config, args.overrides)
    join_cluster(args)
    ablate.run(config, args.workdir, variants=args.variants)
    return 0


def _diagnostics(args: argparse.Namespace, config) -> int:
    from vmp_jax.data import diagnostic
    from vmp_jax.train import diagnostics

    knobs = dict(diagnostic.DEFAULT_KNOBS)
    for text in args.knobs or []:
        task, _, values = text.partition("=")
        if task not in knobs or not values:
            raise ValueError(
                f"--knobs takes TASK=K1,K2,... with TASK in {list(knobs)}, got {text!r}"
            )
        knobs[task] = tuple(int(v) for v in values.split(","))
    settings = diagnostics.Settings(
        tasks=tuple(args.tasks),
        knobs=knobs,
        seeds=args.seeds,
        variants=tuple(args.variants),
        videos_per_class=args.videos_per_class,
    )
    join_cluster(args)
    diagnostics.run(config, args.workdir, settings)
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
    add_cluster_arguments(p)
    p.set_defaults(func=_train, accepts_overrides=True)

    from vmp_jax.data.diagnostic import TASKS

    p = subparsers.add_parser(
        "ablate",
        help="the paper's Table 5: VideoMamba, VMP w/o residual, VMP w/o masking, VMP",
        description="Trains and evaluates each variant with the same config, data and seed "
        "(in WORKDIR/<variant>, resumable) and prints one table. Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", help=f"the experiment (with --suite: default {DIAGNOSTICS})")
    p.add_argument("--workdir", required=True)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    suite = p.add_argument_group(
        "diagnostic suite",
        "--suite diagnostics: the variants on the decay and contradiction tasks at several "
        "knob settings and seeds (README, 'Diagnostics'); tables, McNemar, plots",
    )
    suite.add_argument("--suite", choices=("diagnostics",))
    suite.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    suite.add_argument("--knobs", nargs="+", metavar="TASK=K1,K2", help="e.g. decay=4,16,64")
    suite.add_argument("--seeds", type=int, default=3)
    suite.add_argument("--videos-per-class", type=int, default=640)
    add_cluster_arguments(p)
    p.set_defaults(func=_ablate, accepts_overrides=True)


def add(subparsers) -> None:
    _add_train_commands(subparsers)
