"""`vmp make-synthetic`, `vmp data-check`, `vmp make-tfds`: datasets."""

import argparse

from vmp_jax import storage


def _size(text: str) -> tuple[int, int]:
    """'96' -> (96, 96); '428x320' (width x height) -> (320, 428)."""
    try:
        w, _, h = text.partition("x")
        return (int(h or w), int(w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected S or WxH, got {text!r}") from None


def _make_diagnostic(args: argparse.Namespace, height: int, width: int) -> int:
    from tqdm import tqdm

    from vmp_jax.data import diagnostic

    if height != width:
        raise ValueError(f"--task {args.task} takes square frames (--size S), got {width}x{height}")
    if args.knob is None:
        raise ValueError(
            f"--task {args.task} needs --knob (defaults of the suite: "
            f"{diagnostic.DEFAULT_KNOBS[args.task]}, {diagnostic.KNOB_NAMES[args.task]})"
        )
    task = diagnostic.Task(
        args.task, args.knob, size=height, patch=args.patch, frames=args.frames or 8
    )
    spec = diagnostic.Spec(
        args.out, task, args.videos_per_class, args.fps, args.val_fraction, args.seed
    )
    with tqdm(total=2 * spec.videos_per_class, unit="video") as bar:
        lists = diagnostic.make_dataset(spec, workers=args.workers, progress=lambda _: bar.update())
    print(
        f"wrote {lists['train']} and {lists['val']} (data_root {args.out}): {args.task}, "
        f"{task.num_frames} frames of {task.per_frame} patches, the deciding tokens from "
        f"{task.distance_to_cls()} tokens after CLS"
    )
    return 0


def _make_synthetic_ava(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vmp_jax.data import synthetic_ava

    height, width = args.size or (120, 160)
    spec = synthetic_ava.Spec(
        args.out, args.videos, args.seconds, height, width, args.fps or 30,
        args.val_fraction, args.actors, args.seed,
    )  # fmt: skip
    spec.validate()  # a bad setting fails before any work
    with tqdm(total=spec.videos, unit="video") as bar:
        files = synthetic_ava.make_dataset(
            spec, workers=args.workers, progress=lambda _: bar.update()
        )
    print(f"wrote {len(files)} AVA files and {spec.videos} videos under {args.out} (data_root)")
    return 0


def _make_synthetic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vmp_jax.data import synthetic

    if args.kind == "ava":
        return _make_synthetic_ava(args)
    args.fps = args.fps or 25
    height, width = args.size or ((96, 96) if args.task == "motion" else (32, 32))
    if args.task != "motion":
        return _make_diagnostic(args, height, width)
    spec = synthetic.Spec(
        args.out,
        args.classes,
        args.videos_per_class,
        args.frames or 32,
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
        "OUT/videos/<class>/*.mp4, OUT/train.txt, OUT/val.txt, OUT/classes.txt. With --kind ava: "
        "videos of moving actors doing AVA actions, and AVA's ground-truth, label-map, "
        "excluded-timestamps and predicted-box files under AVA's names (docs/detection.md).",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("--frames", type=int, default=None, help="frames a video (32; contradiction: 8)")
    p.add_argument("--size", type=_size, default=None, help="S or WxH (96; diagnostic tasks: 32)")
    p.add_argument("--fps", type=int, default=None, help="25 (--kind ava: 30, AVA's rate)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="encoding processes (all cores)")
    p.add_argument(
        "--task",
        choices=("motion", "decay", "contradiction"),
        default="motion",
        help="motion: the demo's dataset (default); decay / contradiction: the diagnostic "
        "tasks (README, 'Diagnostics'), with --knob",
    )
    p.add_argument(
        "--knob",
        type=int,
        help="decay: the clip's frames; contradiction: the frames between the two deciding frames",
    )
    p.add_argument("--patch", type=int, default=8, help="diagnostic tasks: the model's patch size")
    p.add_argument(
        "--kind",
        choices=("classification", "ava"),
        default="classification",
        help="ava: the AVA-like detection dataset in AVA's files and layout "
        "(vmp_jax.data.synthetic_ava; --size default 160x120; --val-fraction of --videos are val)",
    )
    p.add_argument("--videos", type=int, default=16, help="--kind ava: videos in all")
    p.add_argument("--seconds", type=int, default=15, help="--kind ava: seconds a video")
    p.add_argument("--actors", type=int, default=3, help="--kind ava: most actors a video")
    p.set_defaults(func=_make_synthetic)

    p = subparsers.add_parser(
        "data-check",
        help="run a config's input pipeline, or --scan every file; report unreadable videos",
        description="Reads N batches of the config's train (or val) pipeline and prints batch "
        "shapes, dtypes and value ranges, clips/s, the skip events and each distinct "
        "unreadable file with its reason. With --scan: opens every distinct file of the "
        "config's train and val lists (or of --list) once, decoding its first, middle and last "
        "frames, in parallel; prints 'unreadable: N of M videos' with a count per reason and "
        "each bad file once, writes the lists without them with --write-clean, and exits 1 "
        "if any file is unreadable. Overrides: --config.KEY=VALUE (e.g. "
        "--config.data.train_list=FILE).",
    )
    p.add_argument("--config", help="an experiment file (not needed with --scan --list)")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument(
        "--split",
        choices=["train", "val", "both"],
        default=None,
        help="default: train; with --scan, both",
    )
    p.add_argument("--scan", action="store_true", help="check every file instead of batches")
    p.add_argument("--list", help="with --scan: a list file or <class>/<video> folder")
    p.add_argument("--data-root", default="", help="with --scan --list: the paths' root")
    p.add_argument(
        "--write-clean",
        metavar="FILE",
        help="with --scan: write the list file without its unreadable entries; when both "
        "splits are scanned FILE must contain {split}, e.g. clean_{split}.txt",
    )
    p.add_argument("--workers", type=int, default=None, help="with --scan: threads")
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

    p = subparsers.add_parser(
        "make-frames",
        help="pack videos into a frame store (JPEG frames in ArrayRecord shards)",
        description="Decodes every video of a config's data.train_list and data.val_list (into "
        "OUT/train and OUT/val), or of --list (into OUT), once, and stores its frames as JPEG "
        "at --short-side in ArrayRecord shards, with frame count, rate, path and label. Train "
        "on it with --config.data.source=frames --config.data.train_list=OUT/train "
        "--config.data.val_list=OUT/val: a clip then costs a few JPEG decodes instead of a "
        "video decode. Runs in parallel; an interrupted packing resumes when the same command "
        "is run again; unreadable videos are left out, listed, and make the exit code 1. "
        "Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", help="an experiment file whose train and val lists are packed")
    p.add_argument("--list", help="instead of --config: a list file or <class>/<video> folder")
    p.add_argument("--data-root", default="", help="with --list: the paths' root")
    p.add_argument("--out", required=True, help="the store directory")
    p.add_argument("--short-side", type=int, default=320, help="frames resized down to it")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--every", type=int, default=1, help="keep every k-th frame")
    p.add_argument("--videos-per-shard", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (all cores)")
    p.add_argument(
        "--reencode",
        choices=["gop8", "intra"],
        default=None,
        help="instead of a frame store: re-encode the videos as H.264 MP4 files under --out "
        "with a keyframe every 8 frames (gop8) or every frame (intra), and a list file per "
        "split; prints the size and the decode time per clip before and after",
    )
    p.add_argument(
        "--crf", type=int, default=23, help="with --reencode: libx264's quality (18 near lossless)"
    )
    p.set_defaults(func=_make_frames, accepts_overrides=True)


def _data_check(args: argparse.Namespace) -> int:
    from vmp_jax.data import check
    from vmp_jax.experiment import load_config

    if args.scan:
        return _scan(args)
    if args.list or args.write_clean:
        raise ValueError("--list and --write-clean go with --scan")
    if not args.config:
        raise ValueError("give --config (or --scan --list FILE)")
    config = load_config(args.config, args.overrides)
    split = args.split or "train"
    for name in ("train", "val") if split == "both" else (split,):
        check.run(config, split=name, batches=args.batches)
    return 0


def _scan_targets(args) -> list[tuple[str, str, str, str]]:
    """(split, list file or folder, data_root, frame template) of each list to scan."""
    from vmp_jax.data import sources
    from vmp_jax.experiment import load_config

    if args.list:
        return [("list", args.list, args.data_root, "img_{:05d}.jpg")]
    if not args.config:
        raise ValueError("--scan needs --config or --list FILE")
    data = load_config(args.config, args.overrides).data
    template = data.frame_template
    if data.source == "tfds":
        raise ValueError("--scan reads list files and folders; data.source is tfds")
    if args.split in ("train", "val"):  # asked for: a missing list is an error
        return [(args.split, sources.list_path(data, args.split), data.data_root, template)]
    found = []
    for split in ("train", "val"):
        where = sources.list_path(data, split)
        if where and storage.exists(where):
            found.append((split, where, data.data_root, template))
        else:
            print(f"{split}: {where or '(no list set)'} not found, not scanned")
    if not found:
        raise FileNotFoundError("neither data.train_list nor data.val_list exists")
    return found


def _scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vmp_jax.data import listing, scan

    targets = _scan_targets(args)
    storage.check_access([p for _, where, root, _ in targets for p in (where, root)])
    if args.write_clean and len(targets) > 1 and "{split}" not in args.write_clean:
        raise ValueError("--write-clean: two lists are scanned; put {split} in the file name")
    found_bad = False
    for split, where, root, template in targets:
        is_folder = storage.isdir(where)
        items = (
            listing.read_class_folder(where)
            if is_folder
            else listing.read_list_file(where, root, template)
        )
        with tqdm(total=len({i.name for i in items}), unit="video", desc=split) as bar:
            result = scan.scan(items, workers=args.workers, progress=bar.update)
        print(f"{split}: {where}")
        print("\n".join(result.lines()))
        found_bad |= bool(result.bad)
        if args.write_clean:
            if is_folder:
                raise ValueError(f"--write-clean rewrites list files; {where} is a folder")
            out = args.write_clean.replace("{split}", split)
            dropped = scan.write_clean(where, root, result.bad, out, template)
            print(f"wrote {out} ({dropped} entries left out)")
    return 1 if found_bad else 0


def _make_tfds(args: argparse.Namespace) -> int:
    from vmp_jax.data import sources, tfds_builder
    from vmp_jax.experiment import load_config

    data = load_config(args.config, args.overrides).data
    lists = {
        data.train_split: sources.list_path(data, "train"),
        data.val_split: sources.list_path(data, "val"),
    }
    storage.check_access([*lists.values(), data.data_root], outputs=[args.out])
    with storage.staged(args.out) as local:  # TFDS writes local files; a bucket gets a copy
        builder = tfds_builder.build(args.name, lists, data.data_root, local)
    print(f"built {builder.info.full_name} under {args.out}: {builder.info.splits}")
    return 0


def _frame_targets(args) -> list[tuple[str, str, str, str]]:
    """(split, list file or folder, data_root, store directory) of each list to pack."""
    from vmp_jax.data import sources
    from vmp_jax.experiment import load_config

    if args.list:
        if args.config:
            raise ValueError("give --config or --list, not both")
        return [("list", args.list, args.data_root, args.out)]
    if not args.config:
        raise ValueError("give --config (its train and val lists) or --list FILE")
    data = load_config(args.config, args.overrides).data
    if data.source not in ("list", "video_folder"):
        raise ValueError(
            f"make-frames packs list files and video folders; data.source is {data.source}"
        )
    targets = []
    for split in ("train", "val"):
        where = sources.list_path(data, split)
        if where:
            targets.append((split, where, data.data_root, storage.join(args.out, split)))
    if not targets:
        raise FileNotFoundError("the config sets neither data.train_list nor data.val_list")
    return targets


def _list_flags(lists: dict[str, str]) -> str:
    """The overrides that point a config at {split: list file or store} ("list" trains)."""
    keys = {"train": "train_list", "val": "val_list"}
    return " ".join(f"--config.data.{keys.get(s, 'train_list')}={f}" for s, f in lists.items())


def _reencode(args: argparse.Namespace) -> int:
    """make-frames --reencode: every split's videos under --out, a list file per split."""
    from tqdm import tqdm

    from vmp_jax.data import listing, reencode

    settings = reencode.Settings(args.reencode, args.short_side, args.crf)
    settings.validate()
    targets = _frame_targets(args)
    storage.check_access([p for _, where, root, _ in targets for p in (where, root)], [args.out])
    unreadable, lists = 0, {}
    splits = [listing.read_videos(where, root) for _, where, root, _ in targets]
    earlier = reencode.recorded_targets(args.out)  # an earlier run's copies keep their sources
    copies = reencode.assign_targets(splits, earlier, recorded=earlier is not None)
    for (split, where, _, _), items, relative in zip(targets, splits, copies, strict=True):
        with tqdm(total=len(items), unit="video", desc=split) as bar:
            done = reencode.reencode(
                items,
                args.out,
                f"{split}.txt",
                settings,
                targets=relative,
                workers=args.workers,
                progress=bar.update,
            )
        print(f"{split}: {where} -> {done['list']}")
        print("\n".join(reencode.report(items, done, settings)))
        unreadable += sum("error" in r for r in done["results"])
        lists[split] = done["list"]
    use = _list_flags(lists)
    print(f"train on them with --config.data.source=list --config.data.data_root={args.out} {use}")
    return 1 if unreadable else 0


def _make_frames(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vmp_jax.data import frame_packing, listing

    if args.reencode:
        return _reencode(args)
    settings = frame_packing.Settings(
        args.short_side, args.quality, args.every, args.videos_per_shard
    )
    settings.validate()  # before any list is read
    unreadable = 0
    targets = _frame_targets(args)
    for _, where, root, out in targets:
        storage.check_access([where, root], outputs=[out])
    for split, where, root, out in targets:
        items = listing.read_videos(where, root)
        with tqdm(total=len(items), unit="video", desc=split) as bar:
            summary = frame_packing.pack(
                items, out, settings, workers=args.workers, progress=bar.update
            )
        print(f"{split}: {where} -> {out}")
        print("\n".join(frame_packing.report(summary)))
        unreadable += len(summary["unreadable"])
    use = _list_flags({split: out for split, _, _, out in targets})
    print(f"train on it with --config.data.source=frames {use}")
    return 1 if unreadable else 0


def add(subparsers) -> None:
    _add_data_commands(subparsers)
