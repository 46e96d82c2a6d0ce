"""AVA's evaluation files in and out: `vmp ava-eval` on any detections CSV, and the files
`vmp eval` writes for an AVA model (`detections.csv` in AVA's format, `ap_per_class.csv`,
`metrics.json`).

What the official script skips silently is counted here and reported: detection rows of
actions outside the label map (skipped, as the script does), of videos absent from the ground
truth (ignored, as the script does, or false positives with `Options.unlabelled` "count"),
malformed lines (the script stops at the first; here each is reported with its line and left
out).
"""

import collections
import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Sequence

import numpy as np

from vmp_jax import storage
from vmp_jax.data import ava
from vmp_jax.evaluate.ava_map import Options, Result, Table, frame_map


@dataclasses.dataclass
class Report:
    """A scored detections file: the metric, and what in the files needs a look."""

    result: Result
    problems: ava.Problems  # malformed lines of either file
    unknown_videos: dict[str, int]  # detection rows per video id absent from the ground truth
    unknown_actions: dict[int, int]  # detection rows per action id outside the label map
    options: Options = Options()  # how the result was computed (frozen)

    def notes(self) -> list[str]:
        """One line per thing the user should know about the inputs."""
        lines = []
        if set(self.result.names) - set(ava.EVALUATED_IDS):
            lines.append(
                f"the label map lists {len(self.result.names)} actions, some outside the 60 "
                f"AVA's official evaluation scores (ava_action_list_v2.2_for_activitynet_2019"
                f".pbtxt): figures are not comparable with published ones"
            )
        if self.problems:
            lines.append(f"malformed input: {self.problems.summary()}")
        if self.unknown_videos:
            rows, ids = sum(self.unknown_videos.values()), sorted(self.unknown_videos)
            how = (
                "ignored, as the official script"
                if self.options.unlabelled == "ignore"
                else "scored as false positives: --unlabelled count"
            )
            lines.append(
                f"{rows} detection rows of {len(ids)} video ids absent from the ground truth "
                f"({how}): {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            )
        absent = self.result.left_out.get("on keyframes absent from the ground truth", 0)
        if absent:
            lines.append(
                f"{absent} detection rows on keyframes absent from the ground truth ignored, "
                f"as the official script (--unlabelled count scores them as false positives)"
            )
        if self.unknown_actions:
            rows, ids = sum(self.unknown_actions.values()), sorted(self.unknown_actions)
            shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
            lines.append(
                f"{rows} detection rows of {len(ids)} action ids outside the label map "
                f"(not scored, as the official script): {shown}"
            )
        return lines

    def to_json(self) -> dict:
        r = self.result
        return {
            "mAP": r.mean_ap,
            "per_class": r.per_class(),
            "keyframes": r.keyframes,
            "detections": r.detections,
            "left_out": r.left_out,
            "unknown_video_ids": self.unknown_videos,
            "unknown_action_ids": {str(k): v for k, v in self.unknown_actions.items()},
            "malformed_lines": len(self.problems),
        }


def evaluate_files(
    ground_truth: str,
    detections: str,
    label_map: str,
    excluded: str | None = None,
    options: Options = Options(),  # noqa: B008 - frozen
) -> Report:
    """Frame-mAP of a detections CSV against a ground-truth CSV (AVA's formats) over the
    actions of `label_map`, leaving out the keyframes of `excluded`."""
    names = ava.read_label_map(label_map)
    problems = ava.Problems()
    gt_rows, _ = ava.read_rows(ground_truth, problems)
    det_rows, _ = ava.read_rows(detections, problems)
    left_out = ava.read_excluded(excluded, problems) if excluded else set()
    known_videos = set(gt_rows.video_ids.tolist())
    unknown_videos = collections.Counter(
        v
        for v, boxed in zip(det_rows.video_ids.tolist(), det_rows.boxed.tolist(), strict=True)
        if boxed and v not in known_videos
    )
    outside = ~np.isin(det_rows.actions, sorted(names)) & det_rows.boxed
    unknown_actions = collections.Counter(det_rows.actions[outside].tolist())
    result = frame_map(Table.of(gt_rows), Table.of(det_rows), names, left_out, options)
    if not result.ap:
        raise ValueError(
            f"{ground_truth}: no ground-truth row of the {len(names)} actions of {label_map} "
            f"(excluded keyframes left out): nothing to score"
        )
    return Report(result, problems, dict(unknown_videos), dict(unknown_actions), options)


def per_class_table(result: Result) -> str:
    """The per-action APs, one line each, in the label map's order."""
    width = max([len(n) for n in result.names.values()] + [6])
    lines = [f"{'id':>3}  {'action':<{width}}  {'AP':>6}  {'GT':>6}"]
    for c, name in result.names.items():
        ap = result.ap.get(c)
        shown = f"{ap:6.4f}" if ap is not None else "   -  "
        lines.append(f"{c:>3}  {name:<{width}}  {shown}  {result.ground_truth.get(c, 0):>6}")
    return "\n".join(lines)


def write_detections(
    path: str,
    keyframes: Iterable[tuple[str, int, np.ndarray, np.ndarray]],
    action_ids: Sequence[int] = tuple(range(1, ava.NUM_CLASSES + 1)),
) -> int:
    """Writes detections in AVA's format (`video_id, timestamp, x1, y1, x2, y2, action_id,
    score`, the file the official evaluator reads): one row per box and action.

    keyframes: (video_id, timestamp, boxes float (N, 4) normalised x1, y1, x2, y2, scores
      float (N, len(action_ids))) per keyframe. Returns the number of rows written.
    Scores with 9 significant digits: a float32 reads back unchanged (6 would round distinct
    scores into ties, which the metric then ranks by the evaluator's tie rule)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    ids = list(action_ids)
    rows = 0
    for video_id, timestamp, boxes, scores in keyframes:
        boxes, scores = np.asarray(boxes).reshape(-1, 4), np.asarray(scores)
        if scores.shape != (len(boxes), len(ids)):
            raise ValueError(
                f"{video_id},{timestamp}: scores {scores.shape}, expected ({len(boxes)}, "
                f"{len(ids)}) for {len(boxes)} boxes and {len(ids)} action ids"
            )
        for box, row in zip(boxes.tolist(), scores.tolist(), strict=True):
            coords = [f"{v:.6g}" for v in box]
            for action, score in zip(ids, row, strict=True):
                writer.writerow(
                    [video_id, f"{int(timestamp):04d}", *coords, action, f"{score:.9g}"]
                )
                rows += 1
    storage.write_text(path, out.getvalue())
    return rows


def write_report(out: str, report: Report) -> dict[str, str]:
    """`ap_per_class.csv` (action_id, name, ap, ground_truth) and `metrics.json` ({"mAP",
    "per_class", "keyframes", "detections", ...}) in folder `out`; their paths by name."""
    r = report.result
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["action_id", "name", "ap", "ground_truth"])
    for c, name in r.names.items():
        ap = r.ap.get(c)
        writer.writerow([c, name, "" if ap is None else f"{ap:.6f}", r.ground_truth.get(c, 0)])
    paths = {
        "ap_per_class": storage.join(out, "ap_per_class.csv"),
        "metrics": storage.join(out, "metrics.json"),
    }
    storage.makedirs(out)
    storage.write_text(paths["ap_per_class"], table.getvalue())
    storage.write_text(paths["metrics"], json.dumps(report.to_json(), indent=1) + "\n")
    return paths
