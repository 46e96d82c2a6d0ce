"""`vmp params`, `vmp flops`, `vmp similarity`: what a model config computes and costs."""

import argparse


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
        from vmp_jax.evaluate.predict import load_model

        model, step, _ = load_model(config, args.checkpoint, weights="raw")
        print(f"weights: {args.checkpoint} (step {step})")
    else:
        model = VideoMamba(cfg, rngs=nnx.Rngs(args.seed))
        model.eval()
    shape = (1, cfg.num_frames, cfg.img_size, cfg.img_size, cfg.channels)
    if args.video:
        settings = pipeline.ClipSettings.from_config(config)
        settings = dataclasses.replace(settings, num_clips=1, num_crops=1)
        item = sources.VideoFile(args.video, 0, args.video)
        video = pipeline.test_views(item, settings)  # (1, T, S, S, 3)
    else:
        video = jax.random.normal(jax.random.key(args.seed), shape)
    result = similarity.layer_matrices(model, video, args.layer, args.channels)
    for path in similarity.save(result, args.out):
        print(f"wrote {path}")
    return 0


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


def add(subparsers) -> None:
    _add_model_commands(subparsers)
    _add_similarity(subparsers)
