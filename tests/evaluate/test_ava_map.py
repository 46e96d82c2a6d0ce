"""AVA's frame-mAP: hand-built cases and random files against a second implementation written
here from the official script's structure (ActivityNet get_ava_performance.py at master with its
object_detection evaluator): loops, a heap per keyframe, per-image greedy matching."""

import heapq
from collections import defaultdict

import numpy as np
import pytest

from vmp_jax.data import ava
from vmp_jax.evaluate import ava_map
from vmp_jax.evaluate.ava_map import Options, Table, frame_map

NAMES = {1: "bend", 3: "crouch", 4: "dance", 11: "sit", 12: "stand"}


def _table(rows) -> Table:
    """rows: (video_id, timestamp, x1, y1, x2, y2, action[, score]), or (video_id, timestamp):
    a 2-column row (a labelled keyframe without a box)."""
    boxed = np.asarray([len(r) > 2 for r in rows], bool)
    rows = [tuple(r) + (np.nan,) * 4 + (-1,) if len(r) == 2 else tuple(r) for r in rows]
    rows = [r + (1.0,) * (8 - len(r)) for r in rows]
    return Table(
        np.asarray([r[0] for r in rows], object),
        np.asarray([int(r[1]) for r in rows], np.int64),
        np.asarray([r[2:6] for r in rows], np.float64).reshape(-1, 4),
        np.asarray([r[6] for r in rows], np.int64),
        np.asarray([r[7] for r in rows], np.float64),
        boxed,
    )


def _map(gt, det, names=NAMES, excluded=frozenset(), **options):
    return frame_map(_table(gt), _table(det), names, excluded, Options(**options))


A, B, C = (0.1, 0.1, 0.4, 0.9), (0.5, 0.1, 0.8, 0.9), (0.0, 0.0, 0.05, 0.05)
GT = [
    ("v1", 902, *A, 12), ("v1", 902, *A, 4), ("v1", 902, *B, 11),
    ("v1", 903, *A, 12), ("v1", 903, *B, 12),
    ("v2", 1000, *B, 1),
]  # fmt: skip


def test_a_perfect_detector_scores_one():
    det = [(*row, 0.9 - 0.01 * i) for i, row in enumerate(GT)]
    result = _map(GT, det)
    assert result.mean_ap == pytest.approx(1.0)
    assert set(result.ap) == {1, 4, 11, 12}  # crouch (3) has no ground truth: not in the mean
    assert result.keyframes == 3 and result.detections == len(GT)


def test_boxes_shuffled_between_persons_score_low():
    swap = {A: B, B: A}
    det = [(r[0], r[1], *swap[r[2:6]], r[6], 0.9) for r in GT]
    assert _map(GT, det).mean_ap < 0.3
    det[3] = (*GT[3], 0.95)  # one right box among them
    assert _map(GT, det).ap[12] == pytest.approx(1 / 3)


def test_ties_rank_later_keyframes_first_as_the_scripts_argsort_of_two():
    gt = [("v1", 903, *A, 12), ("v1", 902)]  # 902: labelled, nobody there
    fp_first_in_file = [("v1", 902, *A, 12, 0.9), ("v1", 903, *A, 12, 0.9)]
    assert _map(gt, fp_first_in_file).ap[12] == pytest.approx(1.0)  # the TP ranked first
    assert _map(gt, fp_first_in_file[::-1]).ap[12] == pytest.approx(0.5)


def test_tied_scores_within_a_keyframe_follow_the_scripts_heap_order():
    # Derivation (the script: heappush of (score, action, y1, x1, y2, x2) per row, then
    # sorted(heap, key=-score), stable). File order A, C: push eA = (0.9, 12, 0.1, 0.1, ..),
    # push eC = (0.9, 12, 0.0, 0.0, ..): eC < eA sifts up, the heap list is [eC, eA]; file
    # order C, A: eA > eC stays, [eC, eA] too. Either way the keyframe's list is C (no
    # overlap: a false positive), A (a true positive). The action's scores [0.9, 0.9]:
    # np.argsort gives [0, 1] (asserted below), reversed: A first, then C: AP 1.0. (Equal
    # scores in file order, A then C, would rank C first: AP 0.5.)
    assert np.argsort(np.array([0.9, 0.9])).tolist() == [0, 1]
    gt = [("v1", 902, *A, 12)]
    det = [("v1", 902, *A, 12, 0.9), ("v1", 902, *C, 12, 0.9)]
    assert _map(gt, det).ap[12] == pytest.approx(1.0)
    assert _map(gt, det[::-1]).ap[12] == pytest.approx(1.0)


def test_ground_truth_in_the_scripts_heap_order_decides_equal_ious():
    # The script reads the ground truth through the same heap: its "score" is the 8th column
    # (AVA's person id), so a keyframe's boxes come by person id descending: g2 (person 1),
    # then g1 (person 0). d overlaps both by IoU 0.5 exactly (dyadic coordinates): np.argmax
    # takes the first, g2, already matched by e (score 0.95): d is a false positive.
    # Precision 1 at recall 1/2, then nothing: AP 0.5 (g1 first, in file order: 1.0).
    g1, g2, d = (0.125, 0.125, 0.5, 0.5), (0.375, 0.125, 0.75, 0.5), (0.25, 0.125, 0.625, 0.5)
    gt = [("v1", 902, *g1, 12, 0), ("v1", 902, *g2, 12, 1)]
    det = [("v1", 902, *g2, 12, 0.95), ("v1", 902, *d, 12, 0.9)]
    assert _map(gt, det).ap[12] == pytest.approx(0.5)
    assert _map(gt[::-1], det).ap[12] == pytest.approx(0.5)


def test_the_best_box_is_matched_even_when_taken():
    # two ground-truth boxes; the second detection overlaps both enough, but its best box is
    # the one the first detection took: a false positive (the script's argmax over all boxes)
    a, b = (0.0, 0.0, 0.5, 1.0), (0.2, 0.0, 0.7, 1.0)
    gt = [("v", 902, *a, 12), ("v", 902, *b, 12)]
    det = [("v", 902, *a, 12, 0.9), ("v", 902, 0.05, 0.0, 0.55, 1.0, 12, 0.8)]
    assert _map(gt, det).ap[12] == pytest.approx(0.5)
    assert _map(gt, det, matching="unmatched").ap[12] == pytest.approx(1.0)  # takes b (0.54)


def test_matching_official_and_among_the_unmatched():
    # Three boxes of one action (full height, so IoU is the x-intervals'); detections by score:
    # d1 is a; d2's IoU: a 0.64 > c 0.55 > b 0.53; d3's: c 0.75, a 0.43, b 0.35.
    a, b, c = (0.2, 0.0, 0.9, 1.0), (0.0, 0.0, 0.85, 1.0), (0.3, 0.0, 0.7, 1.0)
    gt = [("v", 902, *box, 12) for box in (a, b, c)]
    det = [
        ("v", 902, *a, 12, 0.9),
        ("v", 902, 0.4, 0.0, 0.85, 1.0, 12, 0.8),
        ("v", 902, 0.4, 0.0, 0.7, 1.0, 12, 0.7),
    ]
    # official: d2's best box a is taken (FP); d3's best, c, is free: TP, FP, TP
    assert _map(gt, det).ap[12] == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    # unmatched: d2 takes c, the best free box (not b, the first free one over 0.5); d3's
    # best free box is then b at 0.35: TP, TP, FP
    assert _map(gt, det, matching="unmatched").ap[12] == pytest.approx(2 / 3)
    assert _map(gt, det, matching="unmatched", iou_threshold=0.6).ap[12] == pytest.approx(
        1 / 3 + 1 / 3 * 2 / 3
    )  # d2's free boxes all under 0.6: FP; d3 takes c (0.75)
    with pytest.raises(ValueError, match="matching='best'"):
        Options(matching="best")


def test_excluded_keyframes_are_left_out_of_both_files():
    gt = [*GT, ("v1", 904)]
    det = [(*row, 0.9) for row in GT] + [("v1", 904, *A, 12, 0.99)]  # an FP on 904
    assert _map(gt, det).ap[12] < 1.0
    excluded = {("v1", 904), ("v2", 1000)}
    result = _map(gt, det, excluded=excluded)
    assert result.ap[12] == pytest.approx(1.0)
    assert 1 not in result.ap  # bend's only box is on an excluded keyframe
    assert result.left_out["on excluded keyframes"] == 2


def test_detections_on_keyframes_absent_from_the_ground_truth_are_ignored():
    # The ground truth's keyframes: every row's key, before the class filter. v3,903 is in the
    # file by a 2-column row, v3,904 by a row of action 2 (outside the map); v3,902 is not.
    gt = [*GT, ("v3", 903), ("v3", 904, *A, 2)]
    det = [(*row, 0.5) for row in GT] + [("v3", 902)]  # a 2-column detection row: no effect
    absent = ("v3", 902, *A, 12, 0.99)
    result = _map(gt, [*det, absent])
    assert result.ap[12] == pytest.approx(1.0)  # the script at master: ignored
    assert result.left_out["on keyframes absent from the ground truth"] == 1
    assert result.left_out["action not in the label map"] == 0
    assert result.keyframes == 5 and result.detections == len(GT)
    counted = _map(gt, [*det, absent], unlabelled="count")  # the 2019 script: a false positive
    assert counted.ap[12] == pytest.approx(0.75) and counted.detections == len(GT) + 1
    for listed in (("v3", 903, *A, 12, 0.99), ("v3", 904, *A, 12, 0.99)):
        for unlabelled in ("ignore", "count"):  # an empty ground truth: a false positive
            assert _map(gt, [*det, listed], unlabelled=unlabelled).ap[12] == pytest.approx(0.75)
    assert _map(GT, [*det, ("v3", 904, *A, 12, 0.99)]).ap[12] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unlabelled='all'"):
        Options(unlabelled="all")


def test_actions_outside_the_label_map_and_empty_boxes():
    det = [(*row, 0.9) for row in GT] + [
        ("v1", 902, *A, 2, 0.99),
        ("v1", 902, *C[:2], 0.0, 0.4, 12, 1.0),
    ]
    result = _map(GT, det)
    assert result.mean_ap == pytest.approx(1.0)
    assert result.left_out["action not in the label map"] == 1
    assert result.left_out["empty boxes"] == 1


def test_top_k_per_keyframe():
    det = [("v1", 902, *C, 12, 0.99)] * 50 + [("v1", 902, *A, 12, 0.5)]
    capped = _map(GT, det)
    assert capped.ap[12] == 0.0 and capped.left_out["beyond the top 50 of a keyframe"] == 1
    assert _map(GT, det, top_k=0).ap[12] > 0


def test_top_k_tie_at_the_boundary_follows_the_scripts_heap():
    # 49 rows above, then three tied at the 50th place: the heap keeps the first tied row in
    # file order and refuses the later ones (a score must be strictly above the lowest)
    det = [("v1", 902, *C, 3, 0.99)] * 49
    det += [("v1", 902, *A, 12, 0.5), ("v1", 902, *A, 4, 0.5), ("v1", 902, *B, 11, 0.5)]
    result = _map(GT, det)
    assert result.ap[12] > 0 and result.ap[4] == 0 and result.ap[11] == 0
    result = _map(GT, [det[0]] * 47 + det[49:] + [("v1", 902, *C, 3, 0.7)])  # a later, higher
    # row pops the heap's smallest tuple: (0.5, 4, ...) < (0.5, 11, ...) < (0.5, 12, ...)
    assert result.ap[4] == 0 and result.ap[11] > 0 and result.ap[12] > 0
    assert ava_map.top_k_rows(np.zeros(3, np.int64), np.ones(3), _table([]), 0).all()


def test_iou_area_offset():
    a, b = np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([[1.0, 1.0, 3.0, 3.0]])
    assert ava_map.iou(a, b)[0] == pytest.approx(1 / 7)
    assert ava_map.iou(a, b, area_offset=1)[0] == pytest.approx(4 / 14)


def test_average_precision_voc_all_point():
    assert ava_map.average_precision(np.array([True, False, True]), 2) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3
    )
    assert ava_map.average_precision(np.array([], bool), 3) == 0.0


# -- a second implementation, following the official script's structure ----------------------


def official(gt_rows, det_rows, class_ids, excluded, unlabelled="ignore", matching="official"):
    """get_ava_performance.run_evaluation (master) with PascalDetectionEvaluator, as loops;
    `excluded` as the 2019 script's exclusions, `unlabelled="count"` as its treatment of
    keyframes absent from the ground truth, `matching="unmatched"` the variant."""

    def read(rows, capacity):
        entries, all_keys = defaultdict(list), set()
        for row in rows:
            key = (row[0], int(row[1]))
            all_keys.add(key)
            if len(row) == 2:
                continue
            vid, ts, x1, y1, x2, y2, action, score = row
            if action not in class_ids:
                continue
            if capacity < 1 or len(entries[key]) < capacity:
                heapq.heappush(entries[key], (score, action, y1, x1, y2, x2))
            elif score > entries[key][0][0]:
                heapq.heapreplace(entries[key], (score, action, y1, x1, y2, x2))
        return {k: sorted(v, key=lambda t: -t[0]) for k, v in entries.items()}, all_keys

    def iou(d, g):  # [y1, x1, y2, x2]
        ih = max(0.0, min(d[2], g[2]) - max(d[0], g[0]))
        iw = max(0.0, min(d[3], g[3]) - max(d[1], g[1]))
        inter = ih * iw
        union = (d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
        return inter / union

    (gt, included), (det, _) = read(gt_rows, 0), read(det_rows, 50)
    num_gt = defaultdict(int)
    for key, entries in gt.items():
        if key not in excluded:
            for e in entries:
                num_gt[e[1]] += 1
    scores, labels = defaultdict(list), defaultdict(list)
    for key, entries in det.items():
        if key in excluded or (unlabelled == "ignore" and key not in included):
            continue
        entries = [e for e in entries if e[2] < e[4] and e[3] < e[5]]  # _remove_invalid_boxes
        for c in class_ids:
            dets = [e for e in entries if e[1] == c]
            gts = [e[2:] for e in gt.get(key, []) if e[1] == c]
            detected = [False] * len(gts)
            for e in dets:
                tp = False
                overlaps = [iou(e[2:], g) for g in gts]
                if matching == "unmatched":
                    free = [i for i in range(len(gts)) if not detected[i]]
                    j = max(free, key=lambda i: (overlaps[i], -i)) if free else None
                else:
                    j = int(np.argmax(overlaps)) if gts else None
                if j is not None and overlaps[j] >= 0.5 and not detected[j]:
                    tp = detected[j] = True
                scores[c].append(e[0])
                labels[c].append(tp)
    aps = {}
    for c in class_ids:
        if not num_gt[c]:
            continue
        s, t = np.array(scores[c], float), np.array(labels[c], bool)
        if not len(s):
            aps[c] = 0.0
            continue
        t = t[np.argsort(s)[::-1]]  # the script's own: NumPy's default kind, not stable
        precision = np.cumsum(t) / np.arange(1, len(t) + 1)
        recall = np.cumsum(t) / num_gt[c]
        r = [0.0, *recall, 1.0]
        p = [0.0, *precision, 0.0]
        for i in range(len(p) - 2, -1, -1):
            p[i] = max(p[i], p[i + 1])
        aps[c] = sum((r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1])
    return aps


def _random_files(rng, discrete=False):
    """Ground truth of a few persons per keyframe with 1-3 actions each, 2-column rows for
    some keyframes without persons, some keyframes with rows of action 2 (outside NAMES) only;
    detections: jittered true boxes with every action (continuous scores, or with `discrete`
    one of 0.25, 0.5, 0.75, 1: ties within keyframes and across them), false boxes,
    keyframes absent from the ground truth, 2-column rows, actions outside the map, empty
    boxes, keyframes over the 50-row cap, and persons side by side (where the two matching
    rules differ)."""
    actions = [1, 2, 3, 4, 11, 12]  # 2 is outside NAMES
    gt, det = [], []

    def score() -> float:
        return rng.integers(1, 5) / 4 if discrete else rng.random()

    for v in range(4):
        for ts in range(902, 910):
            persons = rng.integers(0, 4)
            if not persons and rng.random() < 0.5:
                gt.append((f"v{v}", ts))
            elif not persons and rng.random() < 0.5:
                gt.append((f"v{v}", ts, 0.1, 0.1, 0.5, 0.5, 2, 0))
            if rng.random() < 0.1:
                det.append((f"v{v}", ts))
            previous = None
            for person in range(persons):
                x1, y1 = rng.uniform(0, 0.6, 2)
                box = (x1, y1, x1 + rng.uniform(0.1, 0.4), y1 + rng.uniform(0.1, 0.4))
                if previous and rng.random() < 0.5:  # beside the previous person: crowded
                    box = tuple(np.asarray(previous) + rng.uniform(-0.06, 0.06, 4))
                previous = box
                for a in rng.choice(actions, rng.integers(1, 4), replace=False):
                    gt.append((f"v{v}", ts, *box, int(a), person))
                for _ in range(rng.integers(1, 3)):
                    moved = np.asarray(box) + rng.normal(0, 0.04, 4)
                    for a in actions:
                        det.append((f"v{v}", ts, *moved, a, score()))
            for _ in range(rng.integers(0, 12 if ts == 905 else 2)):
                x1, y1 = rng.uniform(0, 0.6, 2)
                box = (x1, y1, x1 + 0.2, y1 + 0.3) if rng.random() > 0.1 else (x1, y1, x1, y1)
                for a in actions:
                    det.append((f"v{v}" if ts < 909 else "v9", ts, *box, a, score()))
    order = rng.permutation(len(det))
    return gt, [det[i] for i in order]


@pytest.mark.parametrize(
    "unlabelled, matching", [("ignore", "official"), ("count", "official"), ("ignore", "unmatched")]
)
def test_random_files_match_the_scripts_structure(seed, unlabelled, matching):
    rng = np.random.default_rng(seed)
    for discrete in (False, True, True):
        gt, det = _random_files(rng, discrete)
        gt = [gt[i] for i in rng.permutation(len(gt))]
        excluded = {("v0", 903), ("v1", 907)}
        want = official(gt, det, set(NAMES), excluded, unlabelled, matching)
        options = {"unlabelled": unlabelled, "matching": matching}
        got = _map(gt, det, excluded=excluded, **options)
        if (unlabelled, matching) == ("ignore", "official"):
            assert got == _map(gt, det, excluded=excluded)  # the defaults
        assert set(got.ap) == set(want)
        for c in want:
            assert got.ap[c] == pytest.approx(want[c], abs=1e-12), c
        assert got.mean_ap == pytest.approx(np.mean(list(want.values())), abs=1e-12)


def test_table_of_rows(tmp_path):
    path = tmp_path / "det.csv"
    path.write_text("v1,0902,0.1,0.1,0.4,0.9,12,0.9\nv1,0902,0.1,0.1,0.4,0.9,12\n")
    rows, _ = ava.read_rows(str(path))
    table = Table.of(rows)
    assert table.video_ids.tolist() == ["v1", "v1"] and table.timestamps.tolist() == [902, 902]
    assert table.scores.tolist() == [0.9, 1.0]
