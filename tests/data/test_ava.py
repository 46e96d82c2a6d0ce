"""AVA's file readers: ground truth, label map, excluded timestamps, detections, proposals
pickle (restricted unpickler), and every bad-input case."""

import dataclasses
import logging
import os
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vmp_jax import storage
from vmp_jax.data import ava, ava_pickle

LABEL_MAP_60 = (
    Path(__file__).parent / "ava_files" / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt"
)

GT = """\
vid_a,0902,0.1,0.2,0.5,0.9,12,0
vid_a,0902,0.1,0.2,0.5,0.9,80,0
vid_a,0902,0.6,0.1,0.9,0.8,11,1
vid_a,0903,0.1,0.2,0.5,0.9,12,0
vid-b_2,1798,0.0,0.0,1.0,1.0,1,4
vid-b_2,1798,0.0,0.0,1.0,1.0,1,5
"""


def _write(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_label_map_reads_avas_own_60_class_file():
    labels = ava.read_label_map(str(LABEL_MAP_60))
    assert len(labels) == 60
    assert set(labels) <= set(range(1, 81)) and 2 not in labels  # ids 1..80 with gaps
    assert labels[1] == "bend/bow (at the waist)" and labels[80] == "watch (a person)"
    assert list(labels) == sorted(labels)  # file order
    assert tuple(labels) == ava.EVALUATED_IDS


def test_label_map_variants(tmp_path):
    path = _write(
        tmp_path,
        "list.pbtxt",
        """\
        label {
          name: "bend/bow (at the waist)"
          label_id: 1
          label_type: PERSON_MOVEMENT
        }
        item { display_name: "dance" id: 4 }
        """,
    )
    assert ava.read_label_map(path) == {1: "bend/bow (at the waist)", 4: "dance"}
    twice = _write(tmp_path, "twice.pbtxt", 'item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n')
    with pytest.raises(ava.AvaFileError, match=r"twice.pbtxt:2: id 1 given twice"):
        ava.read_label_map(twice)
    with pytest.raises(ava.AvaFileError, match="no `item"):
        ava.read_label_map(_write(tmp_path, "empty.pbtxt", "nothing here\n"))


def test_ground_truth_groups_rows_into_multi_hot_boxes(tmp_path):
    gt = ava.read_ground_truth(_write(tmp_path, "gt.csv", GT))
    assert list(gt) == [("vid_a", 902), ("vid_a", 903), ("vid-b_2", 1798)]
    frame = gt["vid_a", 902]
    assert frame.boxes.shape == (2, 4) and frame.labels.shape == (2, 80)
    np.testing.assert_allclose(frame.boxes[0], [0.1, 0.2, 0.5, 0.9])
    assert frame.actions == [[12, 80], [11]]
    assert frame.labels[0, 11] == 1 and frame.labels[0, 79] == 1 and frame.labels.sum() == 3
    assert frame.person_ids.tolist() == [0, 1]
    assert gt["vid-b_2", 1798].person_ids.tolist() == [4, 5]  # two persons, the same box
    assert not gt.problems and gt.problems.summary() == "no rows left out"


def test_ground_truth_without_person_ids_groups_by_coordinates(tmp_path):
    text = "v,0902,0.1,0.2,0.5,0.9,12\nv,0902,0.1,0.2,0.5,0.9,14\nv,0902,0.2,0.2,0.5,0.9,14\n"
    frame = ava.read_ground_truth(_write(tmp_path, "gt7.csv", text))["v", 902]
    assert frame.actions == [[12, 14], [14]] and frame.person_ids.tolist() == [-1, -1]


def test_bad_rows_are_reported_once_left_out_and_counted(tmp_path, caplog):
    text = GT + (
        "vid_a,0904,0.1,0.2,1.5,0.9,12,0\n"  # line 7: outside [0, 1]
        "vid_a,0904,0.5,0.2,0.5,0.9,12,0\n"  # line 8: zero width
        "vid_a,0904,0.1,0.2,0.5,0.9,81,0\n"  # line 9: unknown action
        "vid_a,0904,0.1,0.2,0.5\n"  # line 10: 5 columns
        "vid_a,09x4,0.1,0.2,0.5,0.9,12,0\n"  # line 11: timestamp not a number
    )
    path = _write(tmp_path, "bad.csv", text)
    with caplog.at_level(logging.WARNING, logger="vmp_jax.data.ava"):
        gt = ava.read_ground_truth(path)
    assert ("vid_a", 904) not in gt and len(gt) == 3  # the good rows all read
    where = {p.where: p.kind for p in gt.problems}
    assert where == {
        7: "box outside [0, 1]",
        8: "empty box",
        9: "unknown action id",
        10: "malformed",
        11: "malformed",
    }
    assert gt.problems.summary().startswith("5 rows left out")
    logged = caplog.text
    for line in (7, 8, 9, 10, 11):
        assert logged.count(f"bad.csv:{line}:") == 1
    assert "'09x4' is not a whole number" in logged and "5 columns, expected 2, 7 or 8" in logged


def test_two_column_rows_are_labelled_keyframes_without_boxes(tmp_path):
    text = GT + (
        "vid_c,0905\n"  # line 7: a keyframe without persons
        "vid_a,0902\n"  # line 8: a 2-column row of a keyframe that has boxes: they stay
        ",0906\n"  # line 9: no video id
        "vid_c,09x6\n"  # line 10: timestamp not a number
        "vid_c,0906,0.1\n"  # line 11: 3 columns
        "vid_c,0906.5\n"  # line 12: AVA v2.2's keys are whole seconds
        "vid_c,0907.0\n"  # line 13: a whole second written as a float: the key 907
    )
    gt = ava.read_ground_truth(_write(tmp_path, "gt.csv", text))
    assert list(gt) == [
        ("vid_a", 902),
        ("vid_a", 903),
        ("vid-b_2", 1798),
        ("vid_c", 905),
        ("vid_c", 907),
    ]
    empty = gt["vid_c", 905]
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0, 80) and not empty.actions
    assert gt["vid_a", 902].actions == [[12, 80], [11]]
    assert {p.where: p.message for p in gt.problems} == {
        9: "empty video id",
        10: "timestamp '09x6' is not a whole number",
        11: "3 columns, expected 2, 7 or 8",
        12: "timestamp '0906.5' is not a whole number",
    }
    det = ava.read_detections(
        _write(tmp_path, "det.csv", "vid_a,0902,0.1,0.2,0.5,0.9,,0.95\nvid_a,0903\nvid_a,0904,1\n")
    )
    assert det["vid_a", 903].boxes.shape == (0, 4) and det["vid_a", 903].scores.shape == (0,)
    assert [p.message for p in det.problems] == ["3 columns, expected 2 or 8"]
    rows, _ = ava.read_rows(_write(tmp_path, "rows.csv", "v,0902\nv,0903,0.1,0.2,0.5,0.9,4\n"))
    assert rows.boxed.tolist() == [False, True] and rows.timestamps.tolist() == [902, 903]
    assert np.isnan(rows.boxes[0]).all() and rows.actions.tolist() == [-1, 4]
    only, _ = ava.read_rows(_write(tmp_path, "only.csv", "v,0902\n"))
    assert only.boxed.tolist() == [False] and only.lines.tolist() == [1]


def test_problems_add_counts_without_rescanning(monkeypatch, caplog):
    problems = ava.Problems([ava.Problem("a.csv", 1, "malformed", "x")])
    monkeypatch.setattr(ava.Problems, "__iter__", lambda self: iter(()))  # a rescan sees none
    with caplog.at_level(logging.WARNING, logger="vmp_jax.data.ava"):
        for line in range(2, 2 * ava.REPORTED_PER_KIND):
            problems.add("a.csv", line, "malformed", "x")
            problems.add("b.csv", line, "empty box", "y")
    assert len(problems) == 1 + 2 * (2 * ava.REPORTED_PER_KIND - 2)
    logged = [r.getMessage() for r in caplog.records]
    a = [m for m in logged if m.startswith("a.csv:")]
    assert len(a) == ava.REPORTED_PER_KIND  # 19 lines (the first problem counted), the note
    assert a[-1] == "a.csv: more rows with malformed: counted in the summary only"
    assert len([m for m in logged if m.startswith("b.csv:")]) == ava.REPORTED_PER_KIND + 1


def test_label_map_ids_restrict_the_ground_truth(tmp_path):
    gt = ava.read_ground_truth(_write(tmp_path, "gt.csv", GT), action_ids=[11, 12])
    assert gt["vid_a", 902].actions == [[12], [11]]
    assert gt.problems.counts() == {"unknown action id": 3}  # actions 80, 1 and 1


def test_a_wholly_malformed_file_is_an_error_naming_file_and_line(tmp_path):
    path = _write(tmp_path, "labels.csv", "a,b,c\nd,e,f\n")
    with pytest.raises(ava.AvaFileError, match=r"labels.csv:1: 3 columns.*no line"):
        ava.read_ground_truth(path)
    with pytest.raises(FileNotFoundError):
        ava.read_ground_truth(str(tmp_path / "missing.csv"))
    with pytest.raises(ava.AvaFileError, match="cannot be read"):
        ava.read_ground_truth(_write(tmp_path, "x.csv", "") and str(_binary(tmp_path)))


def _binary(tmp_path) -> Path:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    return path


def test_excluded(tmp_path):
    path = _write(tmp_path, "excl.csv", "vid_a,0902\nvid-b,1798\nbroken\n")
    problems = ava.Problems()
    assert ava.read_excluded(path, problems) == {("vid_a", 902), ("vid-b", 1798)}
    assert [p.where for p in problems] == [3]
    with pytest.raises(ava.AvaFileError, match="excl2.csv:1"):
        ava.read_excluded(_write(tmp_path, "excl2.csv", "a,b,c\n"))


def test_detections_csv(tmp_path):
    text = (
        "vid_a,0902,0.1,0.2,0.5,0.9,,0.95\n"
        "vid_a,0902,0.6,0.1,0.9,0.8,-1,0.4\n"
        "vid_a,0902,0.1,0.2,0.5,0.9,1,0.97\n"  # the same box again: kept once, top score
        "vid_a,0903,0.1,0.2,0.5,1.2,1,0.9\n"  # outside
        "vid_a,0903,0.1,0.2,0.5,0.9,0.9\n"  # 7 columns
    )
    det = ava.read_detections(_write(tmp_path, "det.csv", text))
    frame = det["vid_a", 902]
    np.testing.assert_allclose(frame.scores, [0.97, 0.4])
    np.testing.assert_allclose(frame.boxes[1], [0.6, 0.1, 0.9, 0.8])
    assert ("vid_a", 903) not in det
    assert det.problems.counts() == {"box outside [0, 1]": 1, "malformed": 1}


def _proposals():
    return {
        "vid_a,0902": np.array([[0.1, 0.2, 0.5, 0.9, 0.99], [0.6, 0.1, 0.9, 0.8, 0.3]], np.float32),
        "vid-b,1798": np.array([[0.0, 0.0, 1.0, 1.0, 0.5], [0.2, 0.2, 0.2, 0.5, 0.5]]),
        "no-comma": np.zeros((1, 5)),
    }


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_proposals_pickle(tmp_path, protocol):
    path = tmp_path / "proposals.pkl"
    path.write_bytes(pickle.dumps(_proposals(), protocol=protocol))
    props = ava.read_proposals_pickle(str(path))
    assert set(props) == {("vid_a", 902), ("vid-b", 1798)}
    np.testing.assert_allclose(props["vid_a", 902].scores, [0.99, 0.3])
    assert props["vid-b", 1798].boxes.shape == (1, 4)  # the zero-width box left out
    assert props.problems.counts() == {"malformed": 1, "empty box": 1}


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_unpickler_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"vid_a,0902": [_Payload(str(marker))]})
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(
        ava_pickle.UnsafePickleError, match=r"evil.pkl: refuses the global \w+\.system"
    ):
        ava.read_proposals_pickle(str(path))
    assert not marker.exists()
    pickle.loads(data)  # the same bytes through plain pickle do run: the test's premise
    assert marker.exists()


def test_readers_take_bucket_urls(gcs, tmp_path):
    storage.write_text("gs://vmp-test/ava/gt.csv", GT)
    storage.write_bytes("gs://vmp-test/ava/p.pkl", pickle.dumps(_proposals()))
    assert len(ava.read_ground_truth("gs://vmp-test/ava/gt.csv")) == 3
    assert len(ava.read_proposals_pickle("gs://vmp-test/ava/p.pkl")) == 2


def test_the_fast_and_the_row_by_row_reader_agree(tmp_path, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n = 200
    lines = [
        f"v{rng.integers(3)},{rng.integers(902, 1799):04d},"
        + ",".join(f"{x:.3f}" for x in rng.random(4))
        + f",{rng.integers(1, 81)},{rng.random():.6f}"
        for _ in range(n)
    ]
    for i in rng.choice(n, 10, replace=False):
        lines[i] = ",".join(lines[i].split(",")[:2])  # 2-column rows among them
    path = _write(tmp_path, "rows.csv", "\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]))
    fast, _ = ava.read_rows(path)
    assert ava._fast_rows(Path(path).read_text().splitlines(), (2, 7, 8)) is not None
    monkeypatch.setattr(ava, "_fast_rows", lambda *_: None)
    careful, _ = ava.read_rows(path)
    assert fast.lines[100] == 102  # the blank line counted
    assert (~fast.boxed).sum() == 10
    for a, b in zip(dataclasses.astuple(fast), dataclasses.astuple(careful), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_quoted_video_id_reads_unquoted_as_csv_reader_does(tmp_path):
    path = _write(tmp_path, "det.csv", '"v1",0902,0.1,0.1,0.4,0.9,12,0.9\nv2,0902\n')
    rows, problems = ava.read_rows(path)
    assert rows.video_ids.tolist() == ["v1", "v2"] and not len(problems)
