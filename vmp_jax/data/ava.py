"""AVA's files as published: ground truth, label map, excluded timestamps, person detections.

Files are read from local paths or bucket URLs (`vmp_jax.storage`). Keys are (video_id,
timestamp) with timestamp an int of whole seconds, as AVA v2.2's files give it (the official
evaluator at master keys "%s,%.6f" % Decimal(timestamp), so it also takes fractional
timestamps; here such a row is a bad row, reported and left out).

- `read_ground_truth`: rows `video_id, timestamp, x1, y1, x2, y2, action_id, person_id`
  (boxes normalised to [0, 1]) -> {key: GroundTruthBoxes}, the rows of one person on one
  keyframe grouped into one box with a multi-hot label (`NUM_CLASSES` columns, action id i in
  column i - 1: the 80 AVA actions, whatever subset the label map evaluates).
- `read_label_map`: the pbtxt (`item { name: "..." id: N }`, or `label { name: ... label_id:
  N }`, or `display_name`) -> {id: name}.
- `read_excluded`: rows `video_id, timestamp` -> {key}.
- `read_detections`: person detections as SlowFast's predicted-boxes CSV, `video_id,
  timestamp, x1, y1, x2, y2, action_id (empty, -1 or 1: ignored), score` -> {key: PersonBoxes};
  `read_proposals_pickle`: MMAction2's dense-proposals pickle (`"video_id,0902" -> [[x1, y1,
  x2, y2, score], ...]`) through `ava_pickle.SafeUnpickler`: nothing in the file runs.
- `read_rows`: any AVA-format CSV as columns, in file order (what the metric reads).

Two-column rows. A row `video_id, timestamp` (ActivityNet's evaluator since 2020) lists a
keyframe that is labelled but has no box: nobody in it to annotate, or, in a detections file,
nobody detected. Every reader of these CSVs accepts it: `read_rows` keeps it (`Rows.boxed`
False), `read_ground_truth` and `read_detections` map its key to zero boxes (unless the key
also has boxes), and the metric counts its keyframe as part of the ground truth.

Bad input. A row with a box outside [0, 1] or of zero area, an unknown action id, a malformed
line (a column count other than 2, 7 or 8, an empty video id, a field that is not a number):
each is reported once (logged with
the file, the line and what is wrong; after `REPORTED_PER_KIND` of a kind in a file the rest
are only counted), left out, and reading goes on; every reader returns its `Problems` (the
result's `.problems`), whose `summary()` counts them by kind. A file with no usable row at all
(every line malformed) or that cannot be read is an `AvaFileError` naming the file and the
first bad line.
"""

import collections
import csv
import dataclasses
import logging
import re

import numpy as np

from vmp_jax import storage
from vmp_jax.data import ava_pickle

log = logging.getLogger(__name__)

NUM_CLASSES = 80  # AVA's action ids 1..80
# The 60 actions AVA's official evaluation scores (ava_action_list_v2.1_for_activitynet_2018 and
# v2.2_for_activitynet_2019 list the same ids): a label map of all 80 is the classic mistake.
EVALUATED_IDS = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36,
    37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66,
    67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)  # fmt: skip
REPORTED_PER_KIND = 20  # problems of one kind logged per file; the rest are counted


class AvaFileError(ValueError):
    """A file that cannot be used at all: unreadable, or no line in it is a valid row."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One left-out row: the file, where in it (a line number or a key), what is wrong."""

    path: str
    where: int | str
    kind: str  # short and fixed: "malformed", "box outside [0, 1]", "unknown action id", ...
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.where}: {self.message}"


class Problems(list):
    """The rows left out while reading, in order; `add` logs the first `REPORTED_PER_KIND` of
    each kind per file (a count per (file, kind): constant time, whatever the list's length)."""

    def __init__(self, problems=()):
        super().__init__(problems)
        self._per_kind = collections.Counter((p.path, p.kind) for p in self)

    def add(self, path: str, where: int | str, kind: str, message: str) -> None:
        problem = Problem(path, where, kind, message)
        shown = self._per_kind[path, kind]
        self._per_kind[path, kind] += 1
        self.append(problem)
        if shown < REPORTED_PER_KIND:
            log.warning("%s (left out)", problem)
        elif shown == REPORTED_PER_KIND:
            log.warning("%s: more rows with %s: counted in the summary only", path, kind)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(p.kind for p in self))

    def summary(self) -> str:
        """'N rows left out (a: kind, b: kind)' or 'no rows left out'."""
        if not self:
            return "no rows left out"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.counts().items())
        return f"{len(self)} rows left out ({kinds})"


@dataclasses.dataclass(frozen=True)
class GroundTruthBoxes:
    """One keyframe's annotated persons, N boxes."""

    boxes: np.ndarray  # float32 (N, 4) normalised x1, y1, x2, y2, as the file gives them
    labels: np.ndarray  # float32 (N, NUM_CLASSES) multi-hot, action id i -> column i - 1
    person_ids: np.ndarray  # int64 (N,) AVA's person id (-1 where the file has none)

    @property
    def actions(self) -> list[list[int]]:
        """Each box's action ids, ascending."""
        return [list(np.flatnonzero(row) + 1) for row in self.labels]


@dataclasses.dataclass(frozen=True)
class PersonBoxes:
    """One keyframe's person detections (or proposals), N boxes."""

    boxes: np.ndarray  # float32 (N, 4) normalised x1, y1, x2, y2
    scores: np.ndarray  # float32 (N,) the detector's person score


class KeyframeMap(dict):
    """{(video_id, timestamp): value} with the `Problems` met while reading it."""

    def __init__(self, *args, problems: Problems | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.problems = Problems() if problems is None else problems


@dataclasses.dataclass(frozen=True)
class Rows:
    """An AVA-format CSV as columns, n valid rows in file order. A 2-column row (a labelled
    keyframe without a box) has `boxed` False, box NaN, action -1 and last 1.0."""

    video_ids: np.ndarray  # object (n,) str
    timestamps: np.ndarray  # int64 (n,)
    boxes: np.ndarray  # float64 (n, 4) x1, y1, x2, y2 as the file gives them
    actions: np.ndarray  # int64 (n,) (-1 where the column is empty)
    last: np.ndarray  # float64 (n,) the 8th column (person id or score); 1.0 if absent
    has_last: np.ndarray  # bool (n,) whether the row has the 8th column
    lines: np.ndarray  # int64 (n,) 1-based line numbers
    boxed: np.ndarray  # bool (n,) whether the row has a box (7 or 8 columns, not 2)


def _read_lines(path: str) -> list[str]:
    try:
        return storage.read_text(path).splitlines()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise AvaFileError(f"{path}: cannot be read: {error}") from error


def _whole(text: str) -> int:
    """A timestamp or action id: a whole number, written "0902" or "902.0" (the same key in
    the official script, which keys on the timestamp's Decimal value; the fast reader's
    float parse takes both too); ValueError otherwise."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def _parse_fields(fields: list[str]) -> tuple:
    """One row's values; ValueError naming the field that is not a number."""
    names = ("timestamp", "x1", "y1", "x2", "y2", "action_id", "8th column")
    values = []
    for i, text in enumerate(fields[1:]):
        text = text.strip()
        try:
            if i == 0:
                values.append(_whole(text))
            elif i == 5:
                values.append(_whole(text) if text else -1)
            else:
                values.append(float(text))
        except ValueError:
            whole = " whole" if i in (0, 5) else ""  # AVA's timestamps and action ids
            raise ValueError(f"{names[i]} {text!r} is not a{whole} number") from None
    return tuple(values)


def read_rows(
    path: str, problems: Problems | None = None, widths: tuple[int, ...] = (2, 7, 8)
) -> tuple[Rows, Problems]:
    """Every well-formed row of an AVA-format CSV (`video_id, timestamp, x1, y1, x2, y2,
    action_id[, person_id or score]`, or `video_id, timestamp`: a labelled keyframe without a
    box), columns in file order; malformed lines go to `problems`.

    A well-formed file (one box width, perhaps with 2-column rows, every field a number) is
    parsed by NumPy's C reader (`np.loadtxt`: AVA validation's 2.9M detection rows in about
    two seconds); otherwise row by row, which names each bad line and keeps the others."""
    problems = Problems() if problems is None else problems
    lines = _read_lines(path)
    fast = _fast_rows(lines, widths)
    if fast is not None:
        return fast, problems
    rows, numbers = [], []
    for number, fields in enumerate(csv.reader(lines), start=1):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) not in widths:
            expected = ", ".join(map(str, widths[:-1])) + f" or {widths[-1]}"
            expected = expected if len(widths) > 1 else str(widths[0])
            problems.add(path, number, "malformed", f"{len(fields)} columns, expected {expected}")
            continue
        if not fields[0].strip():
            problems.add(path, number, "malformed", "empty video id")
            continue
        try:
            _parse_fields(fields)
        except ValueError as error:
            problems.add(path, number, "malformed", str(error))
            continue
        rows.append(fields)
        numbers.append(number)
    if not rows and any(p.path == path for p in problems):
        first = next(p for p in problems if p.path == path)
        raise AvaFileError(f"{first}: no line of the file is a valid row")
    boxed = np.asarray([len(r) != 2 for r in rows], bool)
    return Rows(*_columns(rows), np.asarray(numbers, np.int64), boxed), problems


def _fast_rows(lines: list[str], widths: tuple[int, ...]) -> Rows | None:
    """The rows of a well-formed file through np.loadtxt, or None (then read row by row).
    Well-formed: rows of one box width (7 or 8), and perhaps 2-column rows among them."""
    kept = [line for line in lines if line.strip()]
    numbers = np.arange(1, len(lines) + 1)
    if len(kept) != len(lines):
        numbers = numbers[[bool(line.strip()) for line in lines]]
    if not kept:
        return None
    n = len(kept)
    width = np.fromiter((line.count(",") for line in kept), np.int64, n) + 1  # (n,)
    boxed = width != 2
    wide = set(np.unique(width[boxed]).tolist())
    if not set(np.unique(width).tolist()) <= set(widths) or len(wide) > 1:
        return None  # mixed box widths, a bad width, or quoted fields: the careful path decides
    video_ids = [line[: line.index(",")] for line in kept]
    if not all(video_ids) or '"' in "".join(video_ids):
        return None  # an empty video id (reported), or a quoted one (csv.reader unquotes it)
    video_ids = np.asarray(video_ids, object)
    values = np.full((n, 7), np.nan)  # timestamp, x1, y1, x2, y2, action, last
    values[:, 5:] = (-1, 1.0)
    try:
        if boxed.any():
            (w,) = wide
            box_rows = kept if boxed.all() else [ln for ln, b in zip(kept, boxed, strict=True) if b]
            values[boxed, : w - 1] = np.loadtxt(
                box_rows, delimiter=",", usecols=range(1, w), comments=None, ndmin=2
            )  # (m, w - 1)
        if not boxed.all():
            bare = [line for line, b in zip(kept, boxed, strict=True) if not b]
            values[~boxed, 0] = np.loadtxt(bare, delimiter=",", usecols=[1], comments=None, ndmin=1)
    except ValueError:
        return None
    ints = values[:, [0, 5]]
    if not np.all(np.isfinite(ints) & (ints == np.round(ints))):
        return None
    return Rows(
        video_ids,
        values[:, 0].astype(np.int64),
        np.ascontiguousarray(values[:, 1:5]),
        values[:, 5].astype(np.int64),
        values[:, 6],
        width == 8,
        numbers.astype(np.int64),
        boxed,
    )


def _columns(rows: list[list[str]]) -> tuple:
    """(video_ids, timestamps, boxes, actions, last, has_last) of rows of 2, 7 or 8 str
    fields (a 2-column row as `Rows` describes it)."""
    if not rows:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, object), empty, np.zeros((0, 4)), empty, np.zeros(0), empty > 0
    bare = ["nan"] * 4 + [""]  # a 2-column row's box and action
    cols = list(zip(*(r[:7] if len(r) > 2 else [*r, *bare] for r in rows), strict=True))
    video_ids = np.asarray(cols[0], object)
    timestamps = np.asarray([_whole(t.strip()) for t in cols[1]], np.int64)
    boxes = np.stack([np.asarray(cols[i], np.float64) for i in range(2, 6)], axis=1)
    actions = np.asarray([_whole(a.strip() or "-1") for a in cols[6]], np.int64)
    has_last = np.asarray([len(r) == 8 for r in rows])
    last = np.asarray([r[7] if len(r) == 8 else "1.0" for r in rows], np.float64)
    return video_ids, timestamps, boxes, actions, last, has_last


def _check_boxes(path, rows: Rows, problems: Problems) -> np.ndarray:
    """bool (n,): rows whose box lies in [0, 1] with positive width and height (False, and not
    reported, for 2-column rows: they have no box)."""
    b = rows.boxes
    inside = np.all((b >= 0) & (b <= 1), axis=1) | ~rows.boxed
    positive = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    for i in np.flatnonzero(~inside):
        problems.add(
            path, int(rows.lines[i]), "box outside [0, 1]", f"box {b[i].tolist()} outside [0, 1]"
        )
    for i in np.flatnonzero(inside & ~positive & rows.boxed):
        problems.add(path, int(rows.lines[i]), "empty box", f"box {b[i].tolist()} has zero area")
    return inside & positive & rows.boxed


def _check_actions(path, rows: Rows, known, problems: Problems) -> np.ndarray:
    """bool (n,): rows whose action id is in `known` (default 1..NUM_CLASSES); 2-column rows
    False, not reported."""
    known = set(range(1, NUM_CLASSES + 1)) if known is None else set(known)
    ok = np.isin(rows.actions, sorted(known)) | ~rows.boxed
    for i in np.flatnonzero(~ok):
        problems.add(
            path, int(rows.lines[i]), "unknown action id", f"action id {rows.actions[i]} unknown"
        )
    return ok & rows.boxed


def read_ground_truth(path: str, action_ids=None, problems: Problems | None = None) -> KeyframeMap:
    """{(video_id, timestamp): GroundTruthBoxes} of an AVA ground-truth CSV.

    Rows of the same person on the same keyframe (same person_id and coordinates; for 7-column
    files, without a person_id, the same coordinates) become one box whose multi-hot label has
    every action of those rows; boxes keep the order of their first row. `action_ids`: the ids
    a row may have (default 1..80; a label map's ids keeps only the evaluated ones, the others
    reported). A 2-column row (`video_id, timestamp`: a labelled keyframe without persons)
    gives its key zero boxes, unless other rows give it boxes."""
    rows, problems = read_rows(path, problems)
    keep = _check_boxes(path, rows, problems) & _check_actions(path, rows, action_ids, problems)
    grouped: dict = {}
    for i in np.flatnonzero(keep | ~rows.boxed):  # file order: keys in order of first row
        key = (rows.video_ids[i], int(rows.timestamps[i]))
        boxes = grouped.setdefault(key, {})
        if not rows.boxed[i]:
            continue
        person = int(rows.last[i]) if rows.has_last[i] else -1
        who = (person, tuple(rows.boxes[i]))
        entry = boxes.setdefault(who, [rows.boxes[i], set(), person])
        entry[1].add(int(rows.actions[i]))
    result = KeyframeMap(problems=problems)
    for key, boxes in grouped.items():
        labels = np.zeros((len(boxes), NUM_CLASSES), np.float32)
        for row, (_, ids, _) in enumerate(boxes.values()):
            labels[row, np.asarray(sorted(ids)) - 1] = 1
        result[key] = GroundTruthBoxes(
            np.asarray([b[0] for b in boxes.values()], np.float32).reshape(-1, 4),
            labels,
            np.asarray([b[2] for b in boxes.values()], np.int64),
        )
    return result


def read_excluded(path: str, problems: Problems | None = None) -> set[tuple[str, int]]:
    """{(video_id, timestamp)} of an excluded-timestamps CSV (`video_id, timestamp`)."""
    problems = Problems() if problems is None else problems
    excluded, bad = set(), 0
    lines = _read_lines(path)
    for number, fields in enumerate(csv.reader(lines), start=1):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        try:
            if len(fields) != 2:
                raise ValueError(f"{len(fields)} columns, expected 2 (video_id, timestamp)")
            excluded.add((fields[0], _whole(fields[1].strip())))
        except ValueError as error:
            bad += 1
            problems.add(path, number, "malformed", str(error))
    if bad and not excluded:
        raise AvaFileError(f"{next(p for p in problems if p.path == path)}: no valid row")
    return excluded


def read_detections(path: str, problems: Problems | None = None) -> KeyframeMap:
    """{(video_id, timestamp): PersonBoxes} of a person-detections CSV (SlowFast's
    `ava_val_predicted_boxes.csv`: `video_id, timestamp, x1, y1, x2, y2, action_id, score`,
    the action column empty, -1 or 1 and ignored). A box listed more than once on a keyframe
    (once per action, as some tools write) is kept once, with its highest score. A 2-column row
    (`video_id, timestamp`: nobody detected) gives its key zero boxes, unless other rows give
    it boxes."""
    rows, problems = read_rows(path, problems, widths=(2, 8))
    keep = _check_boxes(path, rows, problems)
    grouped: dict = {}
    for i in np.flatnonzero(keep | ~rows.boxed):
        key = (rows.video_ids[i], int(rows.timestamps[i]))
        boxes = grouped.setdefault(key, {})
        if not rows.boxed[i]:
            continue
        box = tuple(rows.boxes[i])
        boxes[box] = max(boxes.get(box, -np.inf), rows.last[i])
    result = KeyframeMap(problems=problems)
    for key, boxes in grouped.items():
        result[key] = PersonBoxes(
            np.asarray(list(boxes), np.float32).reshape(-1, 4),
            np.asarray(list(boxes.values()), np.float32),
        )
    return result


_BLOCK = re.compile(r"\b(?:item|label)\s*\{([^}]*)\}", re.S)
_NAME = re.compile(r"(?<![a-z_])(name|display_name)\s*:\s*\"([^\"]*)\"")
_ID = re.compile(r"(?<![a-z_])(id|label_id)\s*:\s*(-?\d+)")


def read_label_map(path: str) -> dict[int, str]:
    """{id: name} of a label map pbtxt, in file order: `item { name: "..." id: N }` (AVA's
    evaluation files), `label { name: "..." label_id: N ... }` (AVA's 80-action list), a
    `display_name` where there is no `name`. AvaFileError for a file without items, an item
    without an id, or an id given twice."""
    text = storage.read_text(path)
    labels: dict[int, str] = {}
    for block in _BLOCK.finditer(text):
        line = text.count("\n", 0, block.start()) + 1
        names = dict(_NAME.findall(block.group(1)))
        ids = dict(_ID.findall(block.group(1)))
        ident = ids.get("id", ids.get("label_id"))
        if ident is None:
            raise AvaFileError(f"{path}:{line}: item without an id")
        if int(ident) in labels:
            raise AvaFileError(f"{path}:{line}: id {ident} given twice")
        labels[int(ident)] = names.get("name", names.get("display_name", str(ident)))
    if not labels:
        raise AvaFileError(f'{path}: no `item {{ name: "..." id: N }}` in the file')
    return labels


def read_proposals_pickle(path: str, problems: Problems | None = None) -> KeyframeMap:
    """{(video_id, timestamp): PersonBoxes} of MMAction2's dense-proposals pickle.

    A key that is not "video_id,timestamp", an entry that is not an (N, 4) or (N, 5) array
    (score 1 without a fifth column), and a box outside [0, 1] or of zero area are reported
    (with the key) and left out; a file that is not such a dict is an error naming it."""
    problems = Problems() if problems is None else problems
    data = ava_pickle.safe_load(storage.read_bytes(path), path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dict 'video_id,timestamp' -> boxes expected, got {type(data)}")
    result = KeyframeMap(problems=problems)
    for key, value in data.items():
        parsed = _key(key)
        if parsed is None:
            problems.add(path, repr(key), "malformed", "key is not 'video_id,timestamp'")
            continue
        array = np.asarray(value, np.float64) if _numeric(value) else None
        if array is None or array.ndim != 2 or array.shape[1] not in (4, 5):
            shape = getattr(array, "shape", type(value).__name__)
            problems.add(path, key, "malformed", f"boxes {shape}: (N, 4) or (N, 5) expected")
            continue
        boxes = array[:, :4]
        scores = array[:, 4] if array.shape[1] == 5 else np.ones(len(array))
        inside = np.all((boxes >= 0) & (boxes <= 1), axis=1)
        positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        for i in np.flatnonzero(~(inside & positive)):
            kind = "box outside [0, 1]" if not inside[i] else "empty box"
            problems.add(path, f"{key}[{i}]", kind, f"box {boxes[i].tolist()}: {kind}")
        keep = inside & positive
        result[parsed] = PersonBoxes(
            boxes[keep].astype(np.float32), scores[keep].astype(np.float32)
        )
    return result


def _key(key) -> tuple[str, int] | None:
    if not isinstance(key, str) or "," not in key:
        return None
    video_id, timestamp = key.rsplit(",", 1)
    try:
        return video_id, int(timestamp)
    except ValueError:
        return None


def _numeric(value) -> bool:
    try:
        np.asarray(value, np.float64)
        return True
    except (TypeError, ValueError):
        return False
