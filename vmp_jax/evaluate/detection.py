"""The AVA detector on the validation keyframes: every box's action scores (`predict`), the
frame-mAP of them (`Scorer`, in memory, for validation during training) and what `vmp eval`
writes (`evaluate_checkpoint`, `write_report`: detections.csv in AVA's format, scored as a
file by `ava_report.evaluate_files` like any other tool's, ap_per_class.csv, metrics.json).

Several processes: each evaluates its share of every batch (`ava_inputs.eval_dataset`: each
keyframe once over all hosts), the rows of all hosts are gathered in keyframe order, and every
process holds the same predictions, as a single process's; process 0 writes.
"""

import dataclasses

import jax
import numpy as np

from vmp_jax import storage
from vmp_jax.data import ava, ava_inputs
from vmp_jax.engine import detection_steps, preemption, sharding
from vmp_jax.engine.state import Trainer
from vmp_jax.evaluate import ava_map, ava_report, batches, multiview
from vmp_jax.multihost import join


@dataclasses.dataclass
class Detections:
    """Scored boxes of the keyframes evaluated, in keyframe order: n boxes."""

    video_ids: list[str]  # (n,)
    timestamps: np.ndarray  # int (n,)
    boxes: np.ndarray  # float32 (n, 4) normalised x1, y1, x2, y2 (as the box file gives them)
    scores: np.ndarray  # float32 (n, A) per action id i in column i - 1: sigmoid x person score

    def keyframes(self, action_ids):
        """(video_id, timestamp, boxes, scores of `action_ids`) per keyframe, in order (what
        `ava_report.write_detections` takes)."""
        columns = np.asarray(action_ids, np.int64) - 1
        keys = list(zip(self.video_ids, self.timestamps.tolist(), strict=True))
        starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
        for start, end in zip(starts, [*starts[1:], len(keys)], strict=True):
            yield (*keys[start], self.boxes[start:end], self.scores[start:end][:, columns])

    def table(self, action_ids) -> ava_map.Table:
        """The rows a detections CSV of `action_ids` would hold, for `ava_map.frame_map`."""
        ids = np.asarray(action_ids, np.int64)
        n, a = len(self.video_ids), len(ids)
        return ava_map.Table(
            np.repeat(np.asarray(self.video_ids, object), a),
            np.repeat(self.timestamps.astype(np.int64), a),
            np.repeat(self.boxes.astype(np.float64), a, axis=0),
            np.tile(ids, n),
            self.scores[:, ids - 1].astype(np.float64).reshape(-1),
        )


def predict(trainer: Trainer, state, config, clips, *, eval_step=None, preempt=None):
    """(Detections of every readable keyframe of `clips`, keyframes skipped as unreadable)."""
    eval_step = eval_step or detection_steps.make_eval_step(trainer)
    data = sharding.batch_sharding(trainer.mesh)

    def step(batch):
        inputs = {
            k: jax.make_array_from_process_local_data(data, batch[k])
            for k in detection_steps.EVAL_KEYS
        }
        return eval_step(state, inputs)  # (global B, K, A)

    def rows(batch, scores):  # whole batches (every host as many): filtered once gathered
        return {k: batch[k] for k in ("keyframe", "valid", "box_mask", "source_boxes")} | {
            "scores": scores
        }

    dataset = ava_inputs.eval_dataset(config, clips)
    gathered, skipped = batches.gather_rows(dataset, step, rows, preempt=preempt)
    if not gathered:
        a = config.model.num_classes
        return _detections(clips, np.zeros(0, np.int32), np.zeros((0, 4)), np.zeros((0, a))), 0
    keyframe, valid, mask, boxes, scores = (
        gathered[k] for k in ("keyframe", "valid", "box_mask", "source_boxes", "scores")
    )
    mask = mask & valid[:, None]  # (N, K)
    element, box = np.nonzero(mask)  # row-major: boxes of one element together
    order = np.argsort(keyframe[element], kind="stable")  # keyframe order, boxes in order
    element, box = element[order], box[order]
    return (
        _detections(clips, keyframe[element], boxes[element, box], scores[element, box]),
        skipped,
    )


def _detections(clips, keyframe, boxes, scores) -> Detections:
    kfs = [clips.keyframes[int(i)] for i in keyframe]
    return Detections(
        [kf.video_id for kf in kfs],
        np.asarray([kf.timestamp for kf in kfs], np.int64),
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32).reshape(len(kfs), np.shape(scores)[-1]),
    )


def shuffled_between_actors(detections: Detections) -> Detections:
    """The control of a detector that reads its boxes: on each keyframe with two or more
    boxes, the boxes rotated by one (box i takes box i + 1's place; every box gets another
    person's scores). A head that scores the person in its box drops to chance; one that
    ignores the box does not move."""
    boxes = detections.boxes.copy()
    keys = list(zip(detections.video_ids, detections.timestamps.tolist(), strict=True))
    start = 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            boxes[start:end] = np.roll(detections.boxes[start:end], 1, axis=0)
            start = end
    return dataclasses.replace(detections, boxes=boxes)


class Scorer:
    """The validation ground truth, label map and excluded keyframes, read once; scores
    Detections in memory with the official metric's defaults (`ava_map.Options`)."""

    def __init__(self, config):
        files = ava_inputs.evaluation_files(config)
        self.names = ava.read_label_map(files["label_map"])
        rows, _ = ava.read_rows(files["ground_truth"])
        self.ground_truth = ava_map.Table.of(rows)
        self.excluded = ava.read_excluded(files["excluded"]) if files["excluded"] else set()

    def __call__(self, detections: Detections) -> ava_map.Result:
        table = detections.table(sorted(self.names))
        return ava_map.frame_map(self.ground_truth, table, self.names, self.excluded)


def summary(result: ava_map.Result, skipped: int) -> dict:
    """The validation record: frame-mAP, keyframes, detections scored, skipped keyframes."""
    return {
        "mAP": result.mean_ap,
        "keyframes": result.keyframes,
        "detections": result.detections,
        "skipped": skipped,
    }


def evaluate_checkpoint(config, path: str, *, weights: str = "auto"):
    """Restores the checkpoint at `path` (a workdir, its checkpoints/ or one step) into
    `config`'s detector and predicts every validation keyframe (ava.test_boxes: the person
    detections or the ground-truth boxes).

    Returns (Detections, keyframes skipped as unreadable, the clips' summary, the checkpoint's
    step, whether the EMA weights were evaluated)."""
    join.initialize()
    storage.check_access([path, *ava_inputs.input_paths(config)])
    clips = ava_inputs.open_clips(config, "val")
    params, step, ema = multiview.restore_weights(config, path, weights=weights)
    trainer = Trainer.from_config(config)
    sharding.per_device(config.eval.batch_size, "eval.batch_size", trainer.mesh.size)
    state = trainer.with_params(trainer.init(), params)
    eval_step = detection_steps.make_eval_step(trainer)
    with preemption.Preemption() as preempt:  # SIGTERM or SIGINT: stop after a batch
        detections, skipped = predict(
            trainer, state, config, clips, eval_step=eval_step, preempt=preempt
        )
    return detections, skipped, clips.summary(), step, ema


def write_report(config, detections: Detections, out: str) -> tuple[ava_report.Report, dict]:
    """detections.csv (AVA's format, the evaluated actions) in `out`, scored as a file by
    `ava_report.evaluate_files`; ap_per_class.csv and metrics.json beside it. Returns the
    report and the files' paths by name."""
    files = ava_inputs.evaluation_files(config)
    names = ava.read_label_map(files["label_map"])
    storage.makedirs(out)
    path = storage.join(out, "detections.csv")
    ava_report.write_detections(path, detections.keyframes(sorted(names)), sorted(names))
    report = ava_report.evaluate_files(
        files["ground_truth"], path, files["label_map"], files["excluded"] or None
    )
    return report, {"detections": path, **ava_report.write_report(out, report)}
