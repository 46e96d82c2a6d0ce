"""`vmp bench-ava-eval`: `vmp ava-eval` on files of AVA v2.2 validation's size.

AVA's validation set: 64 videos x 897 keyframes (seconds 902-1798) = 57,408 keyframes, the 60
evaluated actions. The generated ground truth has 0-4 persons per keyframe (2 on average) with
1-3 actions each; the detections 50 (box, action) rows per keyframe (the official cap), each a
jittered true box or a false one, with random scores and actions. Files are written once under
`--folder`; the timing reads and scores them as `vmp ava-eval` does (files to metric), in this
one process (NumPy, one core).
"""

import os
import time

import numpy as np

from vmp_jax.data import ava
from vmp_jax.evaluate import ava_report

VIDEOS, FIRST, LAST = 64, 902, 1798
DETECTIONS_PER_KEYFRAME = 50


def _write_rows(path: str, columns: list) -> None:
    """One CSV line per row from equal-length columns (str arrays)."""
    lines = columns[0]
    for column in columns[1:]:
        lines = np.char.add(np.char.add(lines, ","), column)
    with open(path, "w") as f:
        f.write("\n".join(lines.tolist()) + "\n")


def _fmt(values: np.ndarray) -> np.ndarray:
    return np.char.mod("%.3f", values)


def make_files(folder: str, seed: int = 0) -> dict[str, str]:
    """Ground truth, detections and a label map of the 60 evaluated actions, of AVA
    validation's size, under `folder` (once)."""
    paths = {"gt": os.path.join(folder, "ava_val_bench_gt.csv")}
    paths["detections"] = os.path.join(folder, "ava_val_bench_detections.csv")
    paths["labels"] = os.path.join(folder, "ava_bench_action_list.pbtxt")
    if all(os.path.isfile(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    actions = np.asarray(ava.EVALUATED_IDS)
    with open(paths["labels"], "w") as f:
        f.write("".join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in actions))
    kf_video = np.repeat(np.arange(VIDEOS), LAST - FIRST + 1)  # (keyframes,)
    kf_time = np.tile(np.arange(FIRST, LAST + 1), VIDEOS)
    persons = rng.integers(0, 5, len(kf_video))  # boxes per keyframe
    box_kf = np.repeat(np.arange(len(kf_video)), persons)  # (boxes,)
    corner = rng.uniform(0, 0.6, (len(box_kf), 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.4, (len(box_kf), 2))], axis=1)
    labels_per_box = rng.integers(1, 4, len(box_kf))
    row_box = np.repeat(np.arange(len(box_kf)), labels_per_box)  # GT rows
    gt_ids = np.char.add("video", np.char.zfill(kf_video[box_kf[row_box]].astype(str), 4))
    gt_columns = [gt_ids, kf_time[box_kf[row_box]].astype(str)]
    gt_columns += [_fmt(boxes[row_box, i]) for i in range(4)]
    gt_columns += [rng.choice(actions, len(row_box)).astype(str), row_box.astype(str)]
    _write_rows(paths["gt"], gt_columns)
    # detections: 50 rows per keyframe, a true box jittered (or a false one where none)
    det_kf = np.repeat(np.arange(len(kf_video)), DETECTIONS_PER_KEYFRAME)
    first_box = np.concatenate([[0], np.cumsum(persons)[:-1]])
    pick = first_box[det_kf] + (rng.random(len(det_kf)) * persons[det_kf]).astype(int)
    true = persons[det_kf] > 0
    det_boxes = np.where(true[:, None], boxes[np.minimum(pick, len(boxes) - 1)], 0.3)
    det_boxes = np.clip(det_boxes + rng.normal(0, 0.03, det_boxes.shape), 0, 1)
    det_ids = np.char.add("video", np.char.zfill(kf_video[det_kf].astype(str), 4))
    det_columns = [det_ids, kf_time[det_kf].astype(str)]
    det_columns += [_fmt(det_boxes[:, i]) for i in range(4)]
    det_columns += [rng.choice(actions, len(det_kf)).astype(str)]
    det_columns += [np.char.mod("%.6f", rng.random(len(det_kf)))]
    _write_rows(paths["detections"], det_columns)
    return paths


def run(folder: str, echo=print) -> dict:
    """Times `vmp ava-eval` on the generated files: wall and CPU seconds, and the counts."""
    paths = make_files(folder)
    wall, cpu = time.perf_counter(), time.process_time()
    report = ava_report.evaluate_files(paths["gt"], paths["detections"], paths["labels"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = report.result
    figures = {
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "keyframes": result.keyframes,
        "ground_truth_rows": int(sum(result.ground_truth.values())),
        "detections": result.detections,
        "mAP": result.mean_ap,
    }
    echo(
        f"vmp ava-eval on AVA validation's size: {figures['keyframes']} keyframes, "
        f"{figures['ground_truth_rows']} ground-truth (box, action) rows, "
        f"{figures['detections']} detections, 60 actions: {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"(files read and scored; mAP {result.mean_ap:.4f})"
    )
    return figures
