"""AVA's frame-mAP at IoU 0.5, as ActivityNet's `get_ava_performance.py` computes it.

The official script (ActivityNet `Evaluation/get_ava_performance.py` at master, with the
object_detection evaluator it vendors, `PascalDetectionEvaluator`), step by step, and here:
1. The ground truth's keyframes are the keys of all its rows, before anything is filtered:
   rows of every action, and 2-column rows (`video_id, timestamp`: a labelled keyframe with
   no box). Then rows of actions outside the label map are skipped, in both files.
2. Detections: at most the 50 highest-scored (box, action) rows per keyframe are kept (a heap
   of capacity 50 in file order: a row enters a full heap only with a score strictly above
   its lowest; at a tied boundary the earlier rows stay). `Options.top_k`.
3. Excluded keyframes are left out of both files (the 2019 script's exclusions file; master
   has none: its ground truth has no rows there).
4. Detections on a keyframe absent from the ground truth (step 1: no row of the file at all)
   are ignored. A keyframe that is in the file but has no box of an evaluated action (a
   2-column row, or rows of other actions only) has an empty ground truth: its detections are
   all false positives. `Options.unlabelled` ("count": the 2019 script, which charged
   detections on absent keyframes as false positives too).
5. Detection boxes with x2 <= x1 or y2 <= y1 are dropped (after the cap).
6. Per keyframe and action, the detections in descending score are matched greedily: each to
   the ground-truth box of that action with the highest IoU (the first on ties), a true
   positive if that IoU >= 0.5 and that box was not matched before, else a false positive.
   Note: the box of highest IoU among all of them, not among the unmatched ones (a detection
   whose best box is taken is a false positive even if another box overlaps it enough);
   `Options.matching` "unmatched" takes the best of the still-unmatched boxes instead.
   IoU as object_detection's np_box_ops: areas (y2 - y1)(x2 - x1), no +1. `Options.area_offset`.
7. Per action, all detections in descending score, precision and recall, VOC all-point AP
   (precision made monotone from the right, summed over recall steps); 0 for an action with
   ground truth and no detections; the mAP is the mean over actions with ground truth.

Ties. The script lists each keyframe's rows by `sorted(heap, key=-score)`, stable over its
heap's list, so equal scores come in the heap's list order (tuple comparison on action, y1,
x1, y2, x2), not file order; the greedy matching takes them in that order, and the ground
truth (its 8th column as the "score") goes through the same heap, which decides exact IoU
ties. Here keyframes with equal kept scores are replayed through heapq (`tie_order`). Each
action's detections are then ranked by the script's own `np.argsort(scores)[::-1]` (not
stable: equal scores in an order that depends on the NumPy build and CPU) on the same array
in the same order (keyframes by first detection row), so equal to the script's on one machine.

Vectorised: one pass over all (detection, ground-truth box) pairs of the same keyframe and
action, a NumPy sort per step, a loop over the ~60 actions for the AP only; AVA's validation
size (57k keyframes, 50 detections each) scores in seconds (`vmp bench-ava-eval`).
"""

import dataclasses
import heapq

import numpy as np

from vmp_jax.data import ava

UNLABELLED = ("ignore", "count")
MATCHING = ("official", "unmatched")


@dataclasses.dataclass(frozen=True)
class Options:
    """Where AVA evaluators differ; the defaults are the official script's (master).

    top_k: (box, action) rows kept per keyframe, highest scores first (0: all).
    unlabelled: detections on keyframes absent from the ground-truth file (no row of it, of
      any action or 2 columns, has their key): "ignore" (the official script since 2020) or
      "count" (false positives: the 2019 script). Keyframes in the file without a box of an
      evaluated action count their detections as false positives either way.
    matching: "official" (each detection to the ground-truth box of highest IoU among all of
      its action's on the keyframe; a false positive when that box is taken) or "unmatched"
      (to the box of highest IoU among those still unmatched: the paraphrase in the issue and
      SPEC section 8; COCO's evaluation matches this way too).
    area_offset: 0 (np_box_ops: areas (x2 - x1)(y2 - y1)) or 1 (the +1 of pixel-coordinate
      VOC code, meaningless for AVA's normalised boxes but found in ports).
    iou_threshold: a match needs IoU >= this.
    """

    top_k: int = 50
    unlabelled: str = "ignore"
    matching: str = "official"
    area_offset: float = 0.0
    iou_threshold: float = 0.5

    def __post_init__(self):
        if self.unlabelled not in UNLABELLED:
            raise ValueError(f"unlabelled={self.unlabelled!r}: expected one of {UNLABELLED}")
        if self.matching not in MATCHING:
            raise ValueError(f"matching={self.matching!r}: expected one of {MATCHING}")


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows of one file for the metric: n rows in file order, each a (box, action) or, where
    `boxed` is False, a 2-column row (a labelled keyframe without a box: only its key counts)."""

    video_ids: np.ndarray  # object (n,) str
    timestamps: np.ndarray  # int64 (n,)
    boxes: np.ndarray  # float64 (n, 4) x1, y1, x2, y2
    actions: np.ndarray  # int64 (n,)
    scores: np.ndarray  # float64 (n,) (GT: unused)
    boxed: np.ndarray | None = None  # bool (n,); None: every row has a box

    def __post_init__(self):
        if self.boxed is None:
            object.__setattr__(self, "boxed", np.ones(len(self.actions), bool))

    @classmethod
    def of(cls, rows: ava.Rows) -> "Table":
        return cls(rows.video_ids, rows.timestamps, rows.boxes, rows.actions, rows.last, rows.boxed)

    def take(self, index: np.ndarray) -> "Table":
        columns = (getattr(self, f.name) for f in dataclasses.fields(self))
        return Table(*(column[index] for column in columns))


@dataclasses.dataclass
class Result:
    """The metric and what went into it."""

    mean_ap: float
    ap: dict[int, float]  # action id -> AP, the actions with ground truth
    names: dict[int, str]  # the label map
    ground_truth: dict[int, int]  # action id -> ground-truth boxes
    keyframes: int  # the ground truth's keyframes (step 1; excluded ones left out)
    detections: int  # detection rows scored
    left_out: dict[str, int]  # detection rows not scored, by reason

    def per_class(self) -> dict[str, float]:
        return {self.names[c]: ap for c, ap in self.ap.items()}


def _keyframe_keys(tables: list[Table], excluded) -> tuple[list[np.ndarray], np.ndarray]:
    """int64 keys of each table's (video_id, timestamp), and of the `excluded` pairs, in one
    numbering (video ids numbered in order of first appearance, GT first)."""
    videos = dict.fromkeys(v for t in tables for v in t.video_ids.tolist())
    number = {v: i for i, v in enumerate(videos)}

    def code(vids: list, timestamps) -> np.ndarray:  # video number in the high 32 bits
        video = np.fromiter(map(number.__getitem__, vids), np.int64, len(vids))
        return (video << 32) + (np.asarray(timestamps, np.int64) & 0xFFFFFFFF)

    keys = [code(t.video_ids.tolist(), t.timestamps) for t in tables]
    known = [(v, t) for v, t in excluded if v in number]
    left_out = code([v for v, _ in known], [t for _, t in known])
    return keys, left_out


def _first_appearance(keys: np.ndarray) -> np.ndarray:
    """int64 (n,): dense codes 0.. of `keys`, numbered in order of first appearance."""
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(unique), np.int64)
    rank[np.argsort(first)] = np.arange(len(unique))
    return rank[inverse.reshape(-1)]


def _group_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """int (n,): for each position of a sorted array, the index where its run starts."""
    new = np.ones(len(sorted_codes), bool)
    new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(len(sorted_codes)), 0))


def keyframe_order(keyframe: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """int (n,): the rows by keyframe, score descending, file order."""
    return np.lexsort((np.arange(len(keyframe)), -scores, keyframe))


def top_k_rows(
    keyframe: np.ndarray, scores: np.ndarray, table: Table, k: int, order=None
) -> np.ndarray:
    """bool (n,): the rows the official script's per-keyframe heap of capacity k keeps.
    Vectorised (all rows above a keyframe's k-th score, none below); a keyframe whose k-th and
    (k+1)-th scores tie is replayed through heapq exactly as the script does.
    order: `keyframe_order(keyframe, scores)` if already computed."""
    n = len(keyframe)
    if k < 1 or not n:
        return np.ones(n, bool)
    order = keyframe_order(keyframe, scores) if order is None else order
    rank = np.arange(n) - _group_starts(keyframe[order])
    keep = np.zeros(n, bool)
    keep[order[rank < k]] = True
    last = order[rank == k - 1]  # each full keyframe's k-th row...
    after = order[rank == k]  # ...and the first row left out
    first_out = dict(zip(keyframe[after].tolist(), scores[after].tolist(), strict=True))
    for row in last[
        [first_out.get(kf) == s for kf, s in zip(keyframe[last], scores[last], strict=True)]
    ]:
        rows = np.flatnonzero(keyframe == keyframe[row])  # a tied boundary: replay the heap
        keep[rows] = False
        keep[_heap_list(rows, table, k)] = True
    return keep


def _heap_list(rows: np.ndarray, table: Table, k: int) -> list[int]:
    """The script's heapq over one keyframe's rows (in file order), capacity k (< 1: no cap):
    the rows it keeps, in the heap's list order."""
    heap: list = []
    for i in rows.tolist():
        x1, y1, x2, y2 = table.boxes[i].tolist()
        entry = (table.scores[i], int(table.actions[i]), y1, x1, y2, x2, i)
        if k < 1 or len(heap) < k:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return [e[-1] for e in heap]


def tie_order(
    keyframe: np.ndarray, keep: np.ndarray, table: Table, k: int, order=None, by_action=False
) -> np.ndarray:
    """int64 (n,): a key that orders the kept rows of one keyframe with equal scores as the
    script does: its `sorted(heap_list, key=-score)` is stable, so equal scores come in the
    heap's list order (tuple comparison on action, y1, x1, y2, x2), not in file order.
    The row index (file order) where that makes no difference: only keyframes with two kept
    rows of equal score (by_action: and action, the only ties that matching compares) are
    replayed through heapq, so continuous scores stay fast; a replayed keyframe's row indices
    are handed out among its rows in the heap's order.
    order: the rows sorted by keyframe first, equal scores adjacent (by_action: equal
    (action, score)); default `keyframe_order(keyframe, table.scores)` (by_action: by
    keyframe, action, score)."""
    tie = np.arange(len(keyframe), dtype=np.int64)
    if order is None and by_action:
        order = np.lexsort((table.scores, table.actions, keyframe))
    elif order is None:
        order = keyframe_order(keyframe, table.scores)
    by = order[keep[order]]  # the kept rows by keyframe, equal scores adjacent
    kf, score, action = keyframe[by], table.scores[by], table.actions[by]
    same = (kf[1:] == kf[:-1]) & (score[1:] == score[:-1])
    if by_action:
        same &= action[1:] == action[:-1]
    tied = np.unique(kf[1:][same])
    sorted_kf = keyframe[order]
    starts = np.searchsorted(sorted_kf, tied, "left")
    ends = np.searchsorted(sorted_kf, tied, "right")
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        heap = _heap_list(np.sort(order[start:end]), table, k)  # the rows in file order
        tie[heap] = np.sort(heap)
    return tie


def _inverse(permutation: np.ndarray) -> np.ndarray:
    """int64 (n,): each element's position in `permutation`."""
    inverse = np.empty(len(permutation), np.int64)
    inverse[permutation] = np.arange(len(permutation))
    return inverse


def iou(a: np.ndarray, b: np.ndarray, area_offset: float = 0.0) -> np.ndarray:
    """(n,) IoU of paired boxes x1, y1, x2, y2 (n, 4), as np_box_ops (area_offset 0)."""
    o = area_offset
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + o)
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + o)
    inter = ih * iw
    area_a = (a[:, 3] - a[:, 1] + o) * (a[:, 2] - a[:, 0] + o)
    area_b = (b[:, 3] - b[:, 1] + o) * (b[:, 2] - b[:, 0] + o)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter)


def match(
    det_group, det_boxes, det_rank, gt_group, gt_boxes, options: Options, gt_rank=None
) -> np.ndarray:
    """bool (n,): which detections are true positives (step 6 of the module docstring, or
    `options.matching` "unmatched").

    det_group, gt_group: int64 codes of (keyframe, action); det_rank: int (n,), the order of
    detections within a group (the greedy matching's); gt_rank: int (m,), the order of the
    ground-truth boxes within a group (the first of equal IoUs wins; None: file order);
    boxes float64 (., 4)."""
    n = len(det_group)
    gt_rank = np.arange(len(gt_group)) if gt_rank is None else gt_rank
    gt_order = np.lexsort((gt_rank, gt_group))  # ground truth by group, in gt_rank within
    sorted_groups = gt_group[gt_order]
    start = np.searchsorted(sorted_groups, det_group, "left")
    count = np.searchsorted(sorted_groups, det_group, "right") - start  # (n,)
    det_of_pair = np.repeat(np.arange(n), count)  # (p,)
    offsets = np.cumsum(count) - count
    gt_of_pair = gt_order[start[det_of_pair] + np.arange(len(det_of_pair)) - offsets[det_of_pair]]
    overlap = iou(det_boxes[det_of_pair], gt_boxes[gt_of_pair], options.area_offset)  # (p,)
    if options.matching == "unmatched":
        return _match_unmatched(det_of_pair, gt_of_pair, overlap, det_rank, gt_rank, options)
    has = count > 0
    best = np.full(n, -np.inf)
    if has.any():
        best[has] = np.maximum.reduceat(overlap, offsets[has])  # NaN where a pair is NaN
    first = overlap == best[det_of_pair]  # the first pair reaching the max: np.argmax's pick
    pairs = np.flatnonzero(first)
    pairs = pairs[np.unique(det_of_pair[pairs], return_index=True)[1]]
    target = np.full(n, -1)
    target[det_of_pair[pairs]] = gt_of_pair[pairs]
    candidate = np.flatnonzero((best >= options.iou_threshold) & (target >= 0))
    candidate = candidate[np.lexsort((det_rank[candidate], target[candidate]))]
    tp = np.zeros(n, bool)
    tp[candidate[np.unique(target[candidate], return_index=True)[1]]] = True
    return tp


def _match_unmatched(
    det_of_pair, gt_of_pair, overlap, det_rank, gt_rank, options: Options
) -> np.ndarray:
    """bool (n,): `Options.matching` "unmatched": detections in rank order, each a true
    positive with the still-unmatched box of highest IoU (the first in gt_rank on ties)
    if that IoU >= the threshold. The greedy order makes this a loop, but only over the
    (detection, box) pairs at or above the threshold: the others can match nothing."""
    n = len(det_rank)
    pairs = np.flatnonzero(overlap >= options.iou_threshold)  # (q,) NaN never matches
    det, gt = det_of_pair[pairs], gt_of_pair[pairs]
    pairs = np.lexsort((gt_rank[gt], -overlap[pairs], det_rank[det]))  # by det., best box 1st
    tp = np.zeros(n, bool)
    taken: set[int] = set()
    for d, g in zip(det[pairs].tolist(), gt[pairs].tolist(), strict=True):
        if not tp[d] and g not in taken:
            tp[d] = True
            taken.add(g)
    return tp


def average_precision(tp_sorted: np.ndarray, num_gt: int) -> float:
    """VOC all-point AP of detections already in rank order (object_detection's
    compute_precision_recall + compute_average_precision)."""
    if not len(tp_sorted):
        return 0.0
    hits = np.cumsum(tp_sorted)
    precision = hits / np.arange(1, len(tp_sorted) + 1)
    recall = hits / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map(
    gt: Table,
    det: Table,
    names: dict[int, str],
    excluded: set = frozenset(),
    options: Options = Options(),  # noqa: B008 - frozen
) -> Result:
    """Frame-mAP of `det` against `gt` over the actions of the label map `names`."""
    classes = np.asarray(sorted(names), np.int64)
    left_out: dict[str, int] = {}
    in_map = np.isin(det.actions, classes) & det.boxed
    left_out["action not in the label map"] = int(np.sum(~in_map & det.boxed))
    gt_in = np.flatnonzero(np.isin(gt.actions, classes) & gt.boxed)
    det_in = np.flatnonzero(in_map)
    det_table = det.take(det_in)
    (gt_all_key, det_key), excluded_keys = _keyframe_keys([gt, det_table], excluded)
    all_keys = np.concatenate([gt_all_key, det_key])
    codes = _first_appearance(all_keys)
    gt_all_kf, det_kf = codes[: len(gt_all_key)], codes[len(gt_all_key) :]
    gt_kf = gt_all_kf[gt_in]
    det_image = _first_appearance(det_key)  # the script's keyframe order (step 7)
    by_keyframe = keyframe_order(det_kf, det_table.scores)
    kept = top_k_rows(det_kf, det_table.scores, det_table, options.top_k, by_keyframe)
    left_out[f"beyond the top {options.top_k} of a keyframe"] = int(np.sum(~kept))
    num_keys = int(codes.max()) + 1 if len(codes) else 0
    code_excluded = np.zeros(num_keys, bool)
    code_excluded[codes[np.isin(all_keys, excluded_keys)]] = True
    listed = np.zeros(num_keys, bool)  # the ground truth's keyframes (step 1)
    listed[gt_all_kf] = True
    listed &= ~code_excluded
    gt_keep = ~code_excluded[gt_kf]
    b = det_table.boxes
    valid = (b[:, 1] < b[:, 3]) & (b[:, 0] < b[:, 2])
    on_excluded = kept & code_excluded[det_kf]
    absent = kept & ~on_excluded & ~listed[det_kf]
    left_out["on excluded keyframes"] = int(np.sum(on_excluded))
    left_out["empty boxes"] = int(np.sum(kept & ~on_excluded & ~valid))
    use = kept & ~on_excluded & valid
    if options.unlabelled == "ignore":
        left_out["on keyframes absent from the ground truth"] = int(np.sum(use & absent))
        use &= ~absent
    d = np.flatnonzero(use)
    g = np.flatnonzero(gt_keep)
    det_cls = np.searchsorted(classes, det_table.actions[d])  # the action's slot in classes
    gt_cls = np.searchsorted(classes, gt.actions[gt_in[g]])
    det_group = det_kf[d] * len(classes) + det_cls
    gt_group = gt_kf[g] * len(classes) + gt_cls
    scores = det_table.scores[d]
    tie = tie_order(det_kf, kept, det_table, options.top_k, by_keyframe)[d]
    rank = np.lexsort((tie, -scores))  # within a keyframe: score desc, then the heap's order
    det_rank = _inverse(rank)
    gt_table = gt.take(gt_in[g])  # the script reads the ground truth through the same heap
    gt_tie = tie_order(gt_kf[g], np.ones(len(g), bool), gt_table, 0, by_action=True)
    gt_rank = np.lexsort((gt_tie, -gt_table.scores))  # its "score": the 8th column, person id
    tp = match(det_group, b[d], det_rank, gt_group, gt_table.boxes, options, _inverse(gt_rank))
    # step 7: each action's detections in the script's concatenation order (keyframes in
    # order of their first detection row, each in its heap order), then ranked by the
    # script's own np.argsort(scores)[::-1] (not stable: see "Ties" above)
    order = np.lexsort((tie, -scores, det_image[d], det_cls))
    num_gt = np.bincount(gt_cls, minlength=len(classes))
    bounds = np.searchsorted(det_cls[order], np.arange(len(classes) + 1))
    ap = {}
    for i, c in enumerate(classes.tolist()):
        if num_gt[i]:
            rows = order[bounds[i] : bounds[i + 1]]
            ranked = rows[np.argsort(scores[rows])[::-1]]
            ap[c] = average_precision(tp[ranked], int(num_gt[i]))
    mean = float(np.mean(list(ap.values()))) if ap else float("nan")
    ground_truth = {c: int(num_gt[i]) for i, c in enumerate(classes.tolist()) if num_gt[i]}
    keyframes = int(np.sum(listed))
    return Result(mean, ap, dict(names), ground_truth, keyframes, len(d), left_out)
