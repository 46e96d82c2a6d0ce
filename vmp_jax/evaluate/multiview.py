"""Multi-view testing: every validation video's clips x crops through the model, softmax
averaged per video, gathered into `Predictions`; and the report `vmp eval` writes.

Each host evaluates its shard of the videos; the per-video results of all hosts are gathered
so that every host holds the full predictions.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from vmp_jax.data import pipeline
from vmp_jax.evaluate import metrics
from vmp_jax.train import sharding, steps


def predict(trainer, state, config, source=None, *, eval_step=None):
    """(Predictions of the valid videos, number of videos skipped as unreadable).

    Args:
      eval_step: from `steps.make_eval_step` (made here if not given; pass one to reuse its
        compilation across evaluations).
    """
    eval_step = eval_step or steps.make_eval_step(trainer)
    data = sharding.batch_sharding(trainer.mesh)
    ids, labels, scores, skipped = [], [], [], 0
    iterator = iter(pipeline.test_dataset(config, source))
    try:
        for batch in iterator:
            video = jax.make_array_from_process_local_data(data, batch["video"])
            probs = np.asarray(eval_step(state, video))  # (global B, K)
            local = _local_rows(probs, len(batch["video"]))
            keep = batch["valid"]
            ids.append(batch["video_id"][keep])
            labels.append(batch["label"][keep])
            scores.append(local[keep])
            skipped += int(batch["skipped"].sum())
    finally:
        iterator.close()
    k = trainer.cfg.num_classes
    local = metrics.Predictions(
        np.concatenate(ids) if ids else np.zeros(0, np.int64),
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
        np.concatenate(scores) if scores else np.zeros((0, k)),
    )
    return _gather(local), _sum_over_hosts(skipped)


def evaluate_checkpoint(config, path: str, *, ema: bool = False):
    """Restores the checkpoint at `path` (a workdir, its checkpoints/ or one step) for
    `config` and runs the multi-view test on its validation set.

    Returns:
      (Predictions, number of videos skipped as unreadable, the checkpoint's step).
    """
    from vmp_jax.train import loop
    from vmp_jax.train.checkpoint import restore_state

    s = loop.setup(config)
    if s.val_source is None:
        raise ValueError("no validation data: set data.val_list (or data.source=tfds)")
    state, step = restore_state(path, s.trainer.abstract_placed())
    eval_step = steps.make_eval_step(s.trainer, ema=ema)
    predictions, skipped = predict(s.trainer, state, config, s.val_source, eval_step=eval_step)
    return predictions, skipped, step


def _local_rows(global_rows: np.ndarray, per_host: int) -> np.ndarray:
    start = jax.process_index() * per_host
    return global_rows[start : start + per_host]


def _gather(p: metrics.Predictions) -> metrics.Predictions:
    if jax.process_count() == 1:
        return p
    parts = multihost_utils.process_allgather(
        {"ids": p.video_ids, "labels": p.labels, "scores": p.scores}, tiled=True
    )
    return metrics.Predictions(parts["ids"], parts["labels"], parts["scores"])


def _sum_over_hosts(value: int) -> int:
    if jax.process_count() == 1:
        return value
    return int(np.sum(multihost_utils.process_allgather(np.array([value]))))


def summary(p: metrics.Predictions) -> dict:
    return {"top1": metrics.top_k(p, 1), "top5": metrics.top_k(p, 5), "videos": len(p.labels)}


def per_class(p: metrics.Predictions, class_names=None) -> list[tuple[str, int, float]]:
    """(name, videos, top-1) of every class; names default to the class indices."""
    k = p.scores.shape[1]
    names = class_names or [str(i) for i in range(k)]
    accuracy, counts = metrics.per_class_accuracy(p), np.bincount(p.labels, minlength=k)
    return [(names[i], int(counts[i]), float(accuracy[i])) for i in range(k)]


def per_class_table(p: metrics.Predictions, class_names=None, most: int = 30) -> str:
    """A markdown table of per-class accuracy (the first `most` classes)."""
    rows = ["| class | videos | top-1 |", "|---|---:|---:|"]
    rows += [f"| {n} | {c} | {a:.3f} |" for n, c, a in per_class(p, class_names)[:most]]
    return "\n".join(rows)


def write_report(p: metrics.Predictions, out_dir: str, class_names=None) -> dict:
    """predictions.csv, confusion.png and per_class.csv in out_dir; returns the file paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "predictions": os.path.join(out_dir, "predictions.csv"),
        "per_class": os.path.join(out_dir, "per_class.csv"),
        "confusion": os.path.join(out_dir, "confusion.png"),
    }
    metrics.write_csv(p, paths["predictions"])
    rows = per_class(p, class_names)
    with open(paths["per_class"], "w") as f:
        f.write("class,name,videos,accuracy\n")
        for i, (name, count, accuracy) in enumerate(rows):
            f.write(f"{i},{name},{count},{accuracy:.4f}\n")
    _plot_confusion(metrics.confusion(p), [name for name, _, _ in rows], paths["confusion"])
    return paths


def _plot_confusion(matrix: np.ndarray, names, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(matrix)
    size = min(4 + 0.35 * k, 30)
    figure, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90)
        ax.set_yticks(range(k), names)
        if k <= 16:
            for (i, j), n in np.ndenumerate(matrix):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (videos)")
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
