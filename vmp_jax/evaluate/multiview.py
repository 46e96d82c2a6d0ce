"""Multi-view testing: every validation video's clips x crops through the model, softmax
averaged per video, gathered into `Predictions` keyed by each video's id; and the report
`vmp eval` writes.

Each host evaluates its shard of the videos; the per-video results of all hosts are gathered
(as positions in the source, turned into ids afterwards, in the source's order) so that every
host holds the full predictions, the same as a single-process run's.
"""

import jax
import numpy as np

from vmp_jax import storage
from vmp_jax.data import pipeline, sources
from vmp_jax.engine import checkpoint, preemption, sharding, steps
from vmp_jax.engine.state import Trainer
from vmp_jax.evaluate import batches, metrics
from vmp_jax.evaluate.weights import WEIGHTS
from vmp_jax.experiment import model_config
from vmp_jax.models.videomamba import abstract_params
from vmp_jax.multihost import join


def use_ema(path: str, weights: str = "auto") -> bool:
    """Whether to evaluate the checkpoint's EMA copy: "auto" takes it when the run kept one,
    "ema" requires it, "raw" never takes it. (Read from the checkpoint, not the config: a
    config that differs in optim.ema_decay still evaluates the run's weights.)"""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    kept = "ema" in checkpoint.saved_parts(path)
    if weights == "ema" and not kept:
        raise ValueError(f"{path}: the run kept no EMA weights (optim.ema_decay was 0)")
    return kept and weights != "raw"


def describe_weights(ema: bool) -> str:
    """Which weights were evaluated, for the reports."""
    return "EMA weights" if ema else "raw weights"


def restore_weights(config, path: str, *, weights: str = "auto"):
    """({param path: np.ndarray}, step, whether the EMA copy was taken) of a checkpoint, for
    the model `config` describes."""
    ema = use_ema(path, weights)
    abstract = abstract_params(model_config(config))
    params, step = checkpoint.restore_params(path, abstract, part="ema" if ema else "model")
    return params, step, ema


def predict(trainer, state, config, source=None, *, eval_step=None, preempt=None):
    """(Predictions of the valid videos, number of videos skipped as unreadable).

    Args:
      source: the validation items (opened from the config if not given).
      eval_step: from `steps.make_eval_step` (made here if not given; pass one to reuse its
        compilation across evaluations).
      preempt: a `preemption.Preemption` asked after each batch: on a SIGTERM or SIGINT every
        process stops after the same batch and `Preempted` is raised (the validation inside
        training passes none: the train loop asks after its step).
    """
    source = sources.open_source(config.data, "val") if source is None else source
    eval_step = eval_step or steps.make_eval_step(trainer)
    data = sharding.batch_sharding(trainer.mesh)

    def step(batch):
        return eval_step(state, jax.make_array_from_process_local_data(data, batch["video"]))

    def rows(batch, probs):  # probs: this host's (b, K)
        keep = batch["valid"]
        return {"index": batch["index"][keep], "label": batch["label"][keep], "probs": probs[keep]}

    dataset = pipeline.test_dataset(config, source)
    gathered, skipped = batches.gather_rows(dataset, step, rows, preempt=preempt)
    k = trainer.cfg.num_classes
    indices = gathered.get("index", np.zeros(0, np.int32))
    labels = gathered.get("label", np.zeros(0, np.int32))
    scores = gathered.get("probs", np.zeros((0, k), np.float32))
    order = np.argsort(indices, kind="stable")  # the source's order, whatever the host count
    indices, labels, scores = indices[order], labels[order], scores[order]
    ids = np.array([source[int(i)].video_id for i in indices], np.str_)
    return metrics.Predictions(ids, labels, scores), skipped


def evaluate_checkpoint(config, path: str, *, weights: str = "auto"):
    """Restores the weights of the checkpoint at `path` (a workdir, its checkpoints/ or one
    step) into `config`'s model and runs the multi-view test on its validation set.

    Args:
      weights: "auto" (the EMA copy when the run kept one), "ema" or "raw".

    Returns:
      (Predictions, number of videos skipped as unreadable, the checkpoint's step, whether the
      EMA weights were evaluated).
    """
    join.initialize()
    if not sources.has_validation(config.data):
        raise ValueError("no validation data: set data.val_list (or data.source=tfds)")
    storage.check_access([path, *sources.input_paths(config.data)])
    source = sources.open_source(config.data, "val")
    params, step, ema = restore_weights(config, path, weights=weights)
    trainer = Trainer.from_config(config)
    sharding.per_device(config.eval.batch_size, "eval.batch_size", trainer.mesh.size)
    state = trainer.with_params(trainer.init(), params)  # the chosen weights as the model
    with preemption.Preemption() as preempt:  # SIGTERM or SIGINT: stop after a batch
        predictions, skipped = predict(trainer, state, config, source, preempt=preempt)
    return predictions, skipped, step, ema


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
    paths = {
        "predictions": storage.join(out_dir, "predictions.csv"),
        "per_class": storage.join(out_dir, "per_class.csv"),
        "confusion": storage.join(out_dir, "confusion.png"),
    }
    metrics.write_csv(p, paths["predictions"])
    rows = per_class(p, class_names)
    lines = ["class,name,videos,accuracy"]
    lines += [f"{i},{name},{count},{acc:.4f}" for i, (name, count, acc) in enumerate(rows)]
    storage.write_text(paths["per_class"], "\n".join(lines) + "\n")
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
    storage.save_png(figure, path, dpi=110)
    plt.close(figure)
