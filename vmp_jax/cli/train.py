"""`vmp train` and `vmp ablate`: the main job."""

import argparse

from vmp_jax.cli.launch import add_cluster_arguments, join_cluster


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
    from vmp_jax.experiment import load_config
    from vmp_jax.train import ablate

    config = load_config(args.config, args.overrides)
    join_cluster(args)
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
    add_cluster_arguments(p)
    p.set_defaults(func=_train, accepts_overrides=True)

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
    add_cluster_arguments(p)
    p.set_defaults(func=_ablate, accepts_overrides=True)


def add(subparsers) -> None:
    _add_train_commands(subparsers)
