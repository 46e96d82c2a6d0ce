"""`vmp ava-eval` end to end on small files, the report files `vmp eval` will write, and the
bad-input cases."""

import json
from pathlib import Path

import numpy as np
import pytest

from vmp_jax import cli
from vmp_jax.data import ava
from vmp_jax.evaluate import ava_report

LABELS = (
    Path(__file__).parents[1]
    / "data"
    / "ava_files"
    / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt"
)

GT = """\
v1,0902,0.1,0.1,0.4,0.9,12,0
v1,0902,0.1,0.1,0.4,0.9,80,0
v1,0902,0.5,0.1,0.8,0.9,11,1
v1,0903,0.1,0.1,0.4,0.9,12,0
v2,1000,0.5,0.1,0.8,0.9,1,0
"""


def _files(tmp_path, det: str, gt: str = GT, excluded: str = "") -> list[str]:
    (tmp_path / "gt.csv").write_text(gt)
    (tmp_path / "det.csv").write_text(det)
    args = ["--gt", str(tmp_path / "gt.csv"), "--detections", str(tmp_path / "det.csv")]
    args += ["--labels", str(LABELS)]
    if excluded:
        (tmp_path / "excl.csv").write_text(excluded)
        args += ["--excluded", str(tmp_path / "excl.csv")]
    return args


def _perfect() -> str:
    """The ground truth's rows as detections, scores decreasing down the file."""
    rows = [",".join(line.split(",")[:7]) for line in GT.splitlines()]
    return "".join(f"{row},{0.9 - 0.01 * i:.2f}\n" for i, row in enumerate(rows))


def test_json(tmp_path, capsys):
    assert cli.main(["ava-eval", *_files(tmp_path, _perfect()), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mAP"] == pytest.approx(1.0)
    assert out["per_class"] == {
        "bend/bow (at the waist)": 1.0,
        "sit": 1.0,
        "stand": 1.0,
        "watch (a person)": 1.0,
    }
    assert out["keyframes"] == 3 and out["detections"] == 5


def test_table_and_report_files(tmp_path, capsys):
    out_dir = tmp_path / "report"
    args = [*_files(tmp_path, _perfect()), "--out", str(out_dir)]
    assert cli.main(["ava-eval", *args]) == 0
    printed = capsys.readouterr().out
    assert "frame-mAP@0.5 1.0000 over 4 actions" in printed
    assert "stand" in printed and "dance" in printed  # every action of the map, with or without GT
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(1.0) and "stand" in metrics["per_class"]
    table = (out_dir / "ap_per_class.csv").read_text().splitlines()
    assert table[0] == "action_id,name,ap,ground_truth" and len(table) == 61
    assert "12,stand,1.000000,2" in table


def test_unknown_videos_and_actions_are_counted(tmp_path, capsys):
    det = _perfect() + "v9,0902,0.1,0.1,0.4,0.9,12,0.95\nv1,0902,0.1,0.1,0.4,0.9,2,0.5\n"
    assert cli.main(["ava-eval", *_files(tmp_path, det), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["unknown_video_ids"] == {"v9": 1} and out["unknown_action_ids"] == {"2": 1}
    assert out["per_class"]["stand"] == 1.0  # v9's row ignored, as the script at master
    assert out["left_out"]["on keyframes absent from the ground truth"] == 1
    assert "(ignored, as the official script)" in captured.err
    assert "outside the label map" in captured.err
    assert cli.main(["ava-eval", *_files(tmp_path, det), "--json", "--unlabelled", "count"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["per_class"]["stand"] < 1.0  # the 2019 script: an FP
    assert "(scored as false positives: --unlabelled count)" in captured.err


def test_two_column_rows_list_keyframes_without_boxes(tmp_path, capsys):
    # v3,0902 is in the ground truth without a box: a detection there is a false positive;
    # a 2-column detection row (nobody detected) is read and adds nothing
    gt = GT + "v3,0902\n"
    det = _perfect() + "v3,0902,0.1,0.1,0.4,0.9,12,0.95\nv1,0903\n"
    assert cli.main(["ava-eval", *_files(tmp_path, det, gt=gt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_class"]["stand"] == pytest.approx(2 / 3)  # FP first, then both TPs
    assert out["keyframes"] == 4 and out["malformed_lines"] == 0
    assert out["unknown_video_ids"] == {} and out["left_out"]["action not in the label map"] == 0


def test_matching(tmp_path, capsys):
    # Two boxes of "stand"; the second detection's best box is the first one's (official: a
    # false positive), the other box overlaps it by 0.54 (unmatched: a true positive)
    gt = "v,0902,0.0,0.0,0.5,1.0,12,0\nv,0902,0.2,0.0,0.7,1.0,12,1\n"
    det = "v,0902,0.0,0.0,0.5,1.0,12,0.9\nv,0902,0.05,0.0,0.55,1.0,12,0.8\n"
    for matching, ap in (("official", 0.5), ("unmatched", 1.0)):
        args = [*_files(tmp_path, det, gt=gt), "--json", "--matching", matching]
        assert cli.main(["ava-eval", *args]) == 0
        assert json.loads(capsys.readouterr().out)["per_class"]["stand"] == pytest.approx(ap)


def test_options_and_excluded(tmp_path, capsys):
    det = _perfect() + "v3,0902,0.1,0.1,0.4,0.9,12,0.95\n"
    args = _files(tmp_path, det, excluded="v2,1000\n")
    assert cli.main(["ava-eval", *args, "--json", "--unlabelled", "ignore"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mAP"] == pytest.approx(1.0) and "bend/bow (at the waist)" not in out["per_class"]
    assert out["keyframes"] == 2


def test_malformed_lines_are_reported_and_a_malformed_file_is_an_error(tmp_path, capsys, caplog):
    det = _perfect() + "v1,0902,0.1,0.1\n" + "v1,09o2,0.1,0.1,0.4,0.9,12,0.95\n"
    assert cli.main(["ava-eval", *_files(tmp_path, det), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["malformed_lines"] == 2
    assert "malformed input: 2 rows left out" in captured.err
    assert "det.csv:6: 4 columns" in caplog.text and "det.csv:7: timestamp '09o2'" in caplog.text
    assert cli.main(["ava-eval", *_files(tmp_path, _perfect(), gt="a;b;c\nd;e;f\n")]) == 2
    assert "gt.csv:1: 1 columns, expected 2, 7 or 8" in capsys.readouterr().err
    assert (
        cli.main(["ava-eval", *_files(tmp_path, _perfect(), gt="v1,0902,0.1,0.1,0.4,0.9,2,0\n")])
        == 2
    )
    assert "no ground-truth row of the 60 actions" in capsys.readouterr().err


def test_written_detections_score_as_in_memory(tmp_path, seed):
    rng = np.random.default_rng(seed)
    boxes = np.array([[0.1, 0.1, 0.4, 0.9], [0.5, 0.1, 0.8, 0.9]], np.float32)
    keyframes = [
        ("v1", 902, boxes, rng.random((2, 80))),
        ("v1", 903, boxes[:1], rng.random((1, 80))),
    ]
    path = tmp_path / "detections.csv"
    assert ava_report.write_detections(str(path), keyframes) == 3 * 80
    lines = path.read_text().splitlines()
    assert lines[0].startswith("v1,0902,0.1,0.1,0.4,0.9,1,") and len(lines[0].split(",")) == 8
    model_scores = [(v, t, b, s.astype(np.float32)) for v, t, b, s in keyframes]
    ava_report.write_detections(str(path), model_scores)
    rows, _ = ava.read_rows(str(path))  # the scores read back as the float32s written
    want = np.concatenate([s.ravel() for *_, s in model_scores])
    np.testing.assert_array_equal(rows.last.astype(np.float32), want)
    (tmp_path / "gt.csv").write_text(GT)
    report = ava_report.evaluate_files(str(tmp_path / "gt.csv"), str(path), str(LABELS))
    assert (
        0 < report.result.mean_ap <= 1 and report.result.detections == 50 + 50
    )  # 120 and 60 rows: capped
    with pytest.raises(ValueError, match="scores"):
        ava_report.write_detections(str(path), [("v1", 902, boxes, np.zeros((2, 3)))])


def test_a_label_map_beyond_the_evaluated_60_is_noted(tmp_path, capsys):
    labels = tmp_path / "all80.pbtxt"
    labels.write_text("".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in range(1, 81)))
    args = _files(tmp_path, _perfect())
    args[args.index("--labels") + 1] = str(labels)
    assert cli.main(["ava-eval", *args, "--json"]) == 0
    assert "outside the 60" in capsys.readouterr().err
    assert cli.main(["ava-eval", *_files(tmp_path, _perfect()), "--json"]) == 0
    assert "outside the 60" not in capsys.readouterr().err
