"""`vmp eval`, `vmp predict`, `vmp compare`, `vmp ava-eval`: a trained model on a test set, on
video files, two models' predictions against each other, and AVA's frame-mAP of any detections
file."""

import argparse
import sys

from vmp_jax.cli.launch import add_cluster_arguments, join_cluster
from vmp_jax.evaluate.weights import WEIGHTS

LABELS_HELP = "a label map file (one name per line, CSV id,name, JSON): the class names"
WEIGHTS_HELP = "which weights: the EMA copy when the run kept one (auto, the default), ema, or raw"


def _eval(args: argparse.Namespace) -> int:
    from vmp_jax import storage
    from vmp_jax.data import labels
    from vmp_jax.engine.checkpoint import workdir_of
    from vmp_jax.evaluate import multiview
    from vmp_jax.experiment import load_config
    from vmp_jax.multihost import join

    config = load_config(args.config, args.overrides)
    join_cluster(args)
    storage.check_access(outputs=[args.out or ""])
    if config.model.get("task", "classify") == "ava":
        return _eval_ava(args, config)
    predictions, skipped, step, ema = multiview.evaluate_checkpoint(
        config, args.checkpoint, weights=args.weights
    )
    if not join.is_primary():
        return 0  # every process predicted its share; process 0 reports and writes
    summary = multiview.summary(predictions)
    run = workdir_of(args.checkpoint, default=None)  # never the current folder
    out = args.out or storage.join(run or ".", "eval")
    names = labels.class_names(config, args.labels, workdir=run)
    paths = multiview.write_report(predictions, out, names)
    views = config.eval.num_clips * config.eval.num_crops
    print(
        f"checkpoint step {step} ({multiview.describe_weights(ema)}), "
        f"{summary['videos']} videos x {views} views ({skipped} skipped)"
    )
    print(f"top-1 {summary['top1']:.4f}  top-5 {summary['top5']:.4f}")
    print(multiview.per_class_table(predictions, names))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_ava(args: argparse.Namespace, config) -> int:
    """`vmp eval` of an AVA detector: detections.csv, ap_per_class.csv, metrics.json."""
    from vmp_jax import storage
    from vmp_jax.engine.checkpoint import workdir_of
    from vmp_jax.evaluate import ava_report, detection, multiview
    from vmp_jax.multihost import join

    detections, skipped, clips, step, ema = detection.evaluate_checkpoint(
        config, args.checkpoint, weights=args.weights
    )
    if not join.is_primary():
        return 0  # every process predicted its share; process 0 reports and writes
    if args.shuffle_boxes:
        detections = detection.shuffled_between_actors(detections)
    out = args.out or storage.join(workdir_of(args.checkpoint), "eval")
    report, paths = detection.write_report(config, detections, out)
    boxes = "ground-truth" if config.ava.test_boxes == "gt" else "detected"
    print(
        f"checkpoint step {step} ({multiview.describe_weights(ema)}), {clips}; {boxes} boxes"
        f"{', shuffled between actors (control)' if args.shuffle_boxes else ''} "
        f"({skipped} keyframes unreadable)"
    )
    for note in report.notes():
        print(f"note: {note}")
    print(ava_report.per_class_table(report.result))
    print(f"frame-mAP@0.5 {report.result.mean_ap:.4f} over {len(report.result.ap)} actions")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from vmp_jax import storage
    from vmp_jax.evaluate.predict import Predictor, read_video_list, write_results

    if bool(args.videos) == bool(args.list):
        raise ValueError("give video files, or --list FILE (not both)")
    storage.check_access([args.list or ""], outputs=[args.out or ""])
    videos = read_video_list(args.list, args.data_root) if args.list else args.videos
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        args.config,
        overrides=args.overrides,
        weights=args.weights,
        views=args.views,
        label_map=args.labels,
    )
    print(
        f"checkpoint step {predictor.step} ({predictor.weights}), {predictor.num_views} "
        f"view(s) per video",
        file=sys.stderr,
    )
    results = []
    for result in predictor.iter_predict(videos, workers=args.workers):
        results.append(result)
        if result.ok:
            top = "  ".join(f"{predictor.class_name(i)} {p:.3f}" for i, p in result.top(args.top_k))
            print(f"{result.video}  {top}")
        else:
            print(f"{result.video}  unreadable: {result.error}")
    failed = sum(not r.ok for r in results)
    if args.out:
        write_results(results, args.out, predictor.class_name, args.top_k)
        print(f"wrote {args.out}", file=sys.stderr)
    print(f"predicted {len(results) - failed} of {len(results)} videos", file=sys.stderr)
    return 1 if failed else 0


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


def _add_eval(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="multi-view test of a checkpoint: top-1/5, per class, confusion, predictions CSV",
        description="Evaluates --checkpoint (a workdir, its checkpoints/ or one step directory) "
        "on data.val_list with eval.num_clips x eval.num_crops views per video; writes "
        "predictions.csv (one row per video, keyed by its path as listed), per_class.csv and "
        "confusion.png to --out (default: the checkpoint's workdir/eval). Class names from "
        "--labels, else the names the run trained with (its workdir's classes.txt), "
        "data.label_map or the data root's classes.txt. An AVA config (model.task=ava): "
        "the detector on the validation keyframes (--config.ava.test_boxes=detected, the "
        "person detections at score >= ava.score_threshold, or gt), writing detections.csv "
        "(AVA's format), ap_per_class.csv and metrics.json and printing frame-mAP and the "
        "per-action table (docs/detection.md). Overrides: --config.KEY=VALUE.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--labels", help=LABELS_HELP)
    p.add_argument("--weights", choices=WEIGHTS, default="auto", help=WEIGHTS_HELP)
    p.add_argument(
        "--shuffle-boxes",
        action="store_true",
        help="an AVA detector's control: each keyframe's boxes swapped between its actors "
        "after scoring (each box gets another person's action scores)",
    )
    add_cluster_arguments(p)
    p.set_defaults(func=_eval, accepts_overrides=True)


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify video files with a trained checkpoint: top-k classes per video",
        description="Decodes each video into the config's test views (eval.num_clips x "
        "eval.num_crops, as vmp eval, or --views 1 for one centre view), averages the softmax "
        "over the views and prints the top-k classes with their probabilities. The config is "
        "the checkpoint workdir's config.json (written by vmp train and vmp import) unless "
        "--config is given; class names from --labels, else the names the run trained with "
        "(its workdir's classes.txt), data.label_map or the data root's classes.txt, else "
        "indices. A video that cannot be read is reported with its reason "
        "and the others are still predicted; the exit code is 1 if any failed. Overrides: "
        "--config.KEY=VALUE.",
    )
    p.add_argument("videos", nargs="*", help="video files")
    p.add_argument("--list", help="a file of videos, one per line (path, or path and label)")
    p.add_argument("--data-root", default="", help="the --list paths are relative to it")
    p.add_argument("--checkpoint", required=True, help="a workdir, its checkpoints/ or a step")
    p.add_argument("--config", help="the experiment file (default: the workdir's config.json)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--views", type=int, default=None, help="1: one centre view per video")
    p.add_argument("--labels", help=LABELS_HELP)
    p.add_argument("--out", help="also write the results: FILE.csv or FILE.json")
    p.add_argument("--weights", choices=WEIGHTS, default="auto", help=WEIGHTS_HELP)
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.set_defaults(func=_predict, accepts_overrides=True)


def _add_compare(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="McNemar's test between two predictions files (the paper's section 5.4)",
        description="Pairs two `vmp eval` predictions files by video_id (compared as text: "
        "the videos' paths, or any other ids) and prints the 2x2 table of correct/incorrect "
        "and McNemar's chi-square (no continuity correction) with its p-value; or takes the "
        "table's four counts directly.",
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


def _ava_eval(args: argparse.Namespace) -> int:
    import json

    from vmp_jax import storage
    from vmp_jax.evaluate import ava_map, ava_report

    options = ava_map.Options(
        top_k=args.top_k,
        unlabelled=args.unlabelled,
        matching=args.matching,
        area_offset=args.area_offset,
        iou_threshold=args.iou,
    )
    storage.check_access(
        [args.gt, args.detections, args.labels, args.excluded or ""], outputs=[args.out or ""]
    )
    report = ava_report.evaluate_files(
        args.gt, args.detections, args.labels, args.excluded, options
    )
    for note in report.notes():
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        for name, path in ava_report.write_report(args.out, report).items():
            print(f"wrote {name}: {path}", file=sys.stderr)
    result = report.result
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
        return 0
    print(ava_report.per_class_table(result))
    print(
        f"frame-mAP@{options.iou_threshold:g} {result.mean_ap:.4f} over {len(result.ap)} "
        f"actions with ground truth; {result.keyframes} keyframes, {result.detections} "
        f"detections scored"
    )
    return 0


def _add_ava_eval(subparsers) -> None:
    from vmp_jax.evaluate.ava_map import MATCHING, UNLABELLED, Options

    default = Options()
    p = subparsers.add_parser(
        "ava-eval",
        help="AVA frame-mAP of a detections CSV, as ActivityNet's official script",
        description="Scores a detections CSV (video_id, timestamp, x1, y1, x2, y2, action_id, "
        "score: ours or any other tool's) against AVA ground truth over the actions of the "
        "label map, as ActivityNet's get_ava_performance.py at master (docs/detection.md): "
        "at most 50 (box, action) rows per keyframe, detections on keyframes absent from the "
        "ground truth ignored (a keyframe is in it when any row has its key: rows of other "
        "actions, and 2-column rows 'video_id,timestamp' of a keyframe without boxes, "
        "included), each detection matched to the box of highest IoU, IoU >= 0.5, VOC "
        "all-point AP, the mean over actions with ground truth, --excluded keyframes left out. "
        "Prints the per-action table and frame-mAP, or --json. Detection rows of unknown video "
        "ids or action ids, and malformed lines, are counted and reported.",
    )
    p.add_argument("--gt", required=True, help="ground truth CSV (e.g. ava_val_v2.2.csv)")
    p.add_argument("--detections", required=True, help="detections CSV with a score column")
    p.add_argument("--labels", required=True, help="label map pbtxt of the evaluated actions")
    p.add_argument("--excluded", help="excluded timestamps CSV (video_id, timestamp)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help="also write ap_per_class.csv and metrics.json to this folder")
    p.add_argument(
        "--top-k", type=int, default=default.top_k, help="rows kept per keyframe (0: all)"
    )
    p.add_argument(
        "--unlabelled",
        choices=UNLABELLED,
        default=default.unlabelled,
        help="detections on keyframes absent from the ground-truth file: ignore (official) "
        "or count as false positives (the 2019 script); keyframes the file lists without a "
        "box of an evaluated action count their detections as false positives either way",
    )
    p.add_argument(
        "--matching",
        choices=MATCHING,
        default=default.matching,
        help="a detection's box: the highest-IoU box of its action on the keyframe, a false "
        "positive when already matched (official), or the highest-IoU box among those still "
        "unmatched",
    )
    p.add_argument(
        "--area-offset",
        type=float,
        default=default.area_offset,
        help="added to box sides in IoU (0: official; 1: pixel-coordinate VOC code)",
    )
    p.add_argument("--iou", type=float, default=default.iou_threshold, help="IoU threshold")
    p.set_defaults(func=_ava_eval)


def add(subparsers) -> None:
    _add_eval(subparsers)
    _add_predict(subparsers)
    _add_compare(subparsers)
    _add_ava_eval(subparsers)
