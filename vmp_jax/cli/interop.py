"""`vmp export` and `vmp import`: weights to and from PyTorch in VideoMamba's names."""

import argparse


def _export(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.interop import convert

    config = load_config(args.config, args.overrides)
    paths = convert.export(config, args.out, args.checkpoint, seed=args.seed, ema=args.ema)
    source = args.checkpoint or f"a fresh initialisation (seed {args.seed})"
    print(f"exported {source}")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.interop import convert

    config = load_config(args.config, args.overrides)
    report = convert.import_weights(config, args.weights, args.out, head=args.head, seed=args.seed)
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} (step 0)")
    return 0


def _parity(args: argparse.Namespace) -> int:
    from vmp_jax.experiment import load_config
    from vmp_jax.interop import parity

    config = load_config(args.config, args.overrides)
    result = parity.compare(
        config, args.checkpoint, random=args.random, limit=args.limit, seed=args.seed
    )
    for line in result.lines():
        print(line)
    return 0


def add(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the model's weights as a VideoMamba state dict (.safetensors or .pth)",
        description="Writes the weights of a `vmp train` checkpoint (or, without --checkpoint, a "
        "fresh initialisation from --seed) in VideoMamba's state-dict names and PyTorch layouts, "
        "with the model config as JSON beside the file (OUT.json); "
        "vmp_jax.interop.torch_model.VideoMambaPro.from_exported(OUT) loads both. .pth needs "
        "torch (pip install torch==2.13.0). Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", help="a workdir, its checkpoints/ or one step directory")
    p.add_argument("--out", required=True, help="FILE.safetensors or FILE.pth")
    p.add_argument("--ema", action="store_true", help="the checkpoint's EMA weights")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_export, accepts_overrides=True)

    p = subparsers.add_parser(
        "import",
        help="load a VideoMamba state dict (released .pth or exported) into a checkpoint",
        description="Loads OpenGVLab's released VideoMamba weights (flat video dicts, ImageNet "
        "dicts under `model`, `backbone.`/`encoder.` prefixes) or a `vmp export` file into a "
        "step-0 checkpoint of the config's model in OUT: position grids resized, image weights "
        "inflated, the head dropped or sliced when the class count differs, VideoMambaPro's "
        "unused backward-delta tensors dropped; every change is printed. Fine-tune from it with "
        "`vmp train --config.train.init_from=OUT`. Needs torch (pip install torch==2.13.0). "
        "Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True, help="FILE.pth, FILE.pt or FILE.safetensors")
    p.add_argument("--out", required=True, help="a new workdir for the checkpoint")
    p.add_argument(
        "--head",
        choices=("drop", "slice"),
        default="drop",
        help="when the class count differs: initialise the head afresh (drop) or keep the "
        "first num_classes rows (slice)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialises what the file lacks")
    p.set_defaults(func=_import, accepts_overrides=True)

    p = subparsers.add_parser(
        "parity",
        help="logits of the JAX model and of its exported PyTorch model on the same inputs",
        description="Runs the JAX model (the config's model.dtype, default backend) and the "
        "pure-PyTorch model (float32, CPU) with the same weights on the centre view of each "
        "validation video (or --random N normal videos) and prints the largest logit "
        "difference and the top-1 agreement. Needs torch. Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", help="a workdir, its checkpoints/ or one step directory")
    p.add_argument("--random", type=int, default=0, metavar="N", help="N random videos instead")
    p.add_argument("--limit", type=int, help="at most this many validation videos")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_parity, accepts_overrides=True)
