"""Classification metrics of averaged view scores, the predictions file, and McNemar's test.

Predictions CSV: header `video_id,label,prediction,score_0,...,score_{K-1}`, one row per video
(its views' softmax averaged), the input of `vmp compare`. `video_id` is the video's path as its
list file writes it (a TFDS record's key), so files from runs over differently ordered lists, or
from other tools, pair up; files of older versions, keyed by list position, still read.
"""

import csv
import dataclasses
import io
import math

import numpy as np

from vmp_jax import storage


@dataclasses.dataclass(frozen=True)
class Predictions:
    video_ids: np.ndarray  # str (N,)
    labels: np.ndarray  # int (N,)
    scores: np.ndarray  # float (N, K), rows sum to 1

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(1)


def top_k(p: Predictions, k: int) -> float:
    k = min(k, p.scores.shape[1])
    best = np.argsort(-p.scores, axis=1)[:, :k]
    return float(np.mean(np.any(best == p.labels[:, None], axis=1))) if len(p.labels) else 0.0


def confusion(p: Predictions) -> np.ndarray:
    """int (K, K): rows are true labels, columns predictions."""
    k = p.scores.shape[1]
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (p.labels, p.predicted), 1)
    return matrix


def per_class_accuracy(p: Predictions) -> np.ndarray:
    """float (K,): recall of each class (nan for classes with no video)."""
    matrix = confusion(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(matrix) / matrix.sum(1)


def write_csv(p: Predictions, path: str) -> None:
    """One row per video (local or in a bucket: the file is written whole)."""
    k = p.scores.shape[1]
    body = io.StringIO(newline="")
    writer = csv.writer(body)
    writer.writerow(["video_id", "label", "prediction", *(f"score_{i}" for i in range(k))])
    for vid, label, pred, scores in zip(p.video_ids, p.labels, p.predicted, p.scores, strict=True):
        writer.writerow([str(vid), int(label), int(pred), *(f"{s:.6g}" for s in scores)])
    storage.write_text(path, body.getvalue())


def read_csv(path: str) -> Predictions:
    rows = list(csv.reader(io.StringIO(storage.read_text(path), newline="")))
    if not rows or rows[0][:3] != ["video_id", "label", "prediction"]:
        raise ValueError(f"{path}: not a predictions file (expected header video_id,label,...)")
    body = rows[1:]
    try:
        ids = np.array([r[0] for r in body], np.str_)
        labels = np.array([int(r[1]) for r in body], np.int64)
        scores = np.array([[float(x) for x in r[3:]] for r in body], np.float64)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: malformed row ({e})") from e
    return Predictions(ids, labels, scores.reshape(len(body), -1))


@dataclasses.dataclass(frozen=True)
class McNemar:
    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int

    @property
    def chi2(self) -> float:
        """(b - c)^2 / (b + c), without continuity correction (the paper's section 5.4)."""
        b, c = self.only_a, self.only_b
        return (b - c) ** 2 / (b + c) if b + c else 0.0

    @property
    def p_value(self) -> float:
        """Chi-square with one degree of freedom: P(X > chi2) = erfc(sqrt(chi2 / 2))."""
        return math.erfc(math.sqrt(self.chi2 / 2))

    def table(self, a: str = "A", b: str = "B") -> str:
        n = self.both_correct + self.only_a + self.only_b + self.both_wrong
        return "\n".join(
            [
                f"| | {b} correct | {b} incorrect |",
                "|---|---:|---:|",
                f"| {a} correct | {self.both_correct:,} | {self.only_a:,} |",
                f"| {a} incorrect | {self.only_b:,} | {self.both_wrong:,} |",
                "",
                f"videos: {n:,}; McNemar chi-square = {self.chi2:.1f} (1 dof), "
                f"p = {self.p_value:.3g}",
            ]
        )


def _ids(p: Predictions, which: str) -> list[str]:
    """The rows' ids as strings; a repeated id is an error (rows could not be paired)."""
    ids = [str(v) for v in p.video_ids.tolist()]
    if len(set(ids)) != len(ids):
        repeated = sorted({v for v in ids if ids.count(v) > 1})
        raise ValueError(f"video ids repeated in the {which} file: {repeated[:10]}")
    return ids


def mcnemar(a: Predictions, b: Predictions) -> McNemar:
    """Pairs the two files' rows by video_id (compared as strings); an id in only one file,
    or repeated within one, is an error naming it."""
    ids_a, ids_b = _ids(a, "first"), _ids(b, "second")
    only_a = sorted(set(ids_a) - set(ids_b))
    only_b = sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(
            f"video ids in one file only: first file {only_a[:10]}, second file {only_b[:10]}"
        )
    order_b = {v: i for i, v in enumerate(ids_b)}
    index = np.array([order_b[v] for v in ids_a], np.int64)
    right_a = a.predicted == a.labels
    right_b = b.predicted[index] == b.labels[index]
    return McNemar(
        int(np.sum(right_a & right_b)),
        int(np.sum(right_a & ~right_b)),
        int(np.sum(~right_a & right_b)),
        int(np.sum(~right_a & ~right_b)),
    )
