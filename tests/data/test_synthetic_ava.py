"""The generated AVA-like dataset: AVA's files under AVA's names and in AVA's layouts, boxes
that match the actors' pixels at the keyframe, excluded keyframes without ground truth, and the
same files for the same seed."""

import csv
import os
import pathlib
import re

import numpy as np
import pytest

from vmp_jax.data import ava, decode, synthetic_ava

NAMES = [
    "ava_train_v2.2.csv",
    "ava_val_v2.2.csv",
    "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
    "ava_train_excluded_timestamps_v2.2.csv",
    "ava_val_excluded_timestamps_v2.2.csv",
    "ava_val_predicted_boxes.csv",
    "train.txt",
    "val.txt",
]


def _spec(out, seed=0):
    return synthetic_ava.Spec(str(out), videos=3, seconds=6, val_fraction=0.34, seed=seed)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("ava")
    files = synthetic_ava.make_dataset(_spec(out), workers=1)
    return out, files


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_files_have_avas_names_and_formats(made):
    out, files = made
    assert sorted(os.listdir(out)) == sorted([*NAMES, "synthetic_ava.json", "videos"])
    ids = {os.path.basename(p)[:-4] for p in os.listdir(out / "videos")}
    assert len(ids) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]{11}", i) for i in ids)
    people = {}
    for split in ("train", "val"):
        for row in _rows(out / f"ava_{split}_v2.2.csv"):
            vid, t, *box, action, person = row
            assert vid in ids and re.fullmatch(r"09\d\d", t), row
            x1, y1, x2, y2 = map(float, box)
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, row
            assert int(action) in synthetic_ava.ACTIONS, row
            people.setdefault((vid, t, int(person), tuple(box)), []).append(int(action))
    # Each box: one pose action, any of the others; several actions somewhere.
    for actions in people.values():
        assert len([a for a in actions if a in synthetic_ava.POSES]) == 1
    assert max(len(a) for a in people.values()) > 1
    for row in _rows(out / "ava_val_predicted_boxes.csv"):
        vid, t, *box, action, score = row
        assert vid in ids and action == "" and 0 < float(score) < 1
        assert all(0 <= float(v) <= 1 for v in box)
    scores = [float(r[7]) for r in _rows(out / "ava_val_predicted_boxes.csv")]
    assert min(scores) < 0.8 < max(scores)  # false positives below the threshold


def test_avas_readers_take_every_file(made):
    out, _ = made
    labels = ava.read_label_map(str(out / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"))
    assert labels == synthetic_ava.ACTIONS
    for split in ("train", "val"):
        gt = ava.read_ground_truth(str(out / f"ava_{split}_v2.2.csv"), action_ids=labels)
        assert gt and not gt.problems
        assert all(len(v.boxes) >= 2 for v in gt.values())  # several actors a keyframe
        assert ava.read_excluded(str(out / f"ava_{split}_excluded_timestamps_v2.2.csv"))
    detections = ava.read_detections(str(out / "ava_val_predicted_boxes.csv"))
    assert detections and not detections.problems
    assert set(gt) < set(detections)  # and the excluded keyframes


def test_label_map_is_the_official_layout(made):
    out, _ = made
    text = (out / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").read_text()
    lines = text.splitlines()
    assert len(lines) == 4 * len(synthetic_ava.ACTIONS)
    for i, (action_id, name) in enumerate(synthetic_ava.ACTIONS.items()):
        assert lines[4 * i : 4 * i + 4] == [
            "item {",
            f'  name: "{name}"',
            f"  id: {action_id}",
            "}",
        ]
    # The names are AVA's own for those ids (the published 60-class file).
    shared = "/work/shared/ava/ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt"
    if os.path.exists(shared):
        published = pathlib.Path(shared).read_text()
        for action_id, name in synthetic_ava.ACTIONS.items():
            assert f'  name: "{name}"\n  id: {action_id}\n' in published


def test_excluded_keyframes_have_no_ground_truth(made):
    out, _ = made
    for split in ("train", "val"):
        excluded = {tuple(r) for r in _rows(out / f"ava_{split}_excluded_timestamps_v2.2.csv")}
        assert excluded
        annotated = {(r[0], r[1]) for r in _rows(out / f"ava_{split}_v2.2.csv")}
        assert not excluded & annotated
        assert annotated  # the other keyframes have rows
    detected = {(r[0], r[1]) for r in _rows(out / "ava_val_predicted_boxes.csv")}
    assert excluded <= detected  # a detector sees every keyframe


def test_actor_pixels_lie_in_their_boxes_at_the_keyframe(made):
    """Decoded at frame (t - 900) x 30, each box holds its pose's body colour, and no saturated
    actor colour lies outside the boxes."""
    out, _ = made
    spec = _spec(out)
    rows = _rows(out / "ava_val_v2.2.csv")
    vid, t = rows[0][0], rows[0][1]
    people = {}
    for r in rows:
        if (r[0], r[1]) == (vid, t) and int(r[6]) in synthetic_ava.POSES:
            people[r[7]] = (np.array(r[2:6], float), int(r[6]))
    frame_index = (int(t) - 900) * 30
    frame = decode.read_frames(str(out / "videos" / f"{vid}.mp4"), [frame_index])[0][0]
    frame = frame.astype(np.int32)  # (H, W, 3)

    def near(colour):
        return np.abs(frame - np.array(colour)).max(-1) < 40  # (H, W)

    inside = np.zeros(frame.shape[:2], bool)
    for box, pose in people.values():
        x1, y1, x2, y2 = np.round(box * np.tile([spec.width, spec.height], 2)).astype(int)
        body = near(synthetic_ava.ACTION_COLOURS[pose])
        assert body[y1:y2, x1:x2].sum() > 0.3 * (x2 - x1) * (y2 - y1), (vid, t, box, pose)
        inside[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = True
    actor = np.zeros_like(inside)
    for colour in synthetic_ava.ACTION_COLOURS.values():
        actor |= near(colour)
    assert actor.sum() > 100
    assert (actor & ~inside).sum() <= 3


def test_same_seed_same_files(made, tmp_path):
    out, _ = made
    again = tmp_path / "again"
    synthetic_ava.make_dataset(_spec(again), workers=1)
    for name in [*NAMES, "synthetic_ava.json"]:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    for name in os.listdir(out / "videos"):
        assert (out / "videos" / name).read_bytes() == (again / "videos" / name).read_bytes()
    # Another seed: other ids, other actors (planned, not encoded).
    spec, other = _spec(out), _spec(out, seed=1)
    assert synthetic_ava.video_ids(other) != synthetic_ava.video_ids(spec)
    first, second = (
        synthetic_ava.annotate(spec, synthetic_ava.plan_video(spec, np.random.default_rng(i)))
        for i in (0, 1)
    )
    assert first != second


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="--size must be even"):
        synthetic_ava.make_dataset(synthetic_ava.Spec(str(tmp_path), height=121))
    with pytest.raises(ValueError, match="--seconds must be at least 5"):
        synthetic_ava.make_dataset(synthetic_ava.Spec(str(tmp_path), seconds=4))
    with pytest.raises(ValueError, match="max_actors must be in 2..4"):
        synthetic_ava.make_dataset(synthetic_ava.Spec(str(tmp_path), max_actors=5))


def _colour_rule(region: np.ndarray) -> set[int]:
    """Actions read off a box's pixels by colour alone: the body colour most present, and each
    other action whose mark covers at least 12 pixels."""

    def count(action):
        colour = np.array(synthetic_ava.ACTION_COLOURS[action])
        return int((np.abs(region - colour).max(-1) < 40).sum())

    pose = max(synthetic_ava.POSES, key=count)
    return {pose} | {a for a in synthetic_ava.EXTRAS if count(a) >= 12}


def test_actions_are_visible_in_their_own_box_only(made):
    """A colour rule on each box's pixels at the keyframe recovers its actions; the same rule
    on the boxes shuffled between the keyframe's actors does not (what a ROI head can learn,
    and the control that ruins it)."""
    out, _ = made
    right = shuffled = total = 0
    for split in ("train", "val"):
        for (vid, t), truth in ava.read_ground_truth(str(out / f"ava_{split}_v2.2.csv")).items():
            path = str(out / "videos" / f"{vid}.mp4")
            frame = decode.read_frames(path, [(t - 900) * 30])[0][0].astype(np.int32)
            h, w = frame.shape[:2]
            pixels = np.round(truth.boxes * [w, h, w, h]).astype(int)  # (N, 4)
            found = [_colour_rule(frame[y1:y2, x1:x2]) for x1, y1, x2, y2 in pixels]
            actions = [set(a) for a in truth.actions]
            right += sum(f == a for f, a in zip(found, actions, strict=True))
            shuffled += sum(f == a for f, a in zip(np.roll(found, 1), actions, strict=True))
            total += len(actions)
    assert total >= 10
    assert right == total
    assert shuffled <= total // 2


def test_make_synthetic_kind_ava_on_the_command_line(tmp_path, capsys):
    from vmp_jax import cli

    out = tmp_path / "ava"
    args = ["make-synthetic", "--kind", "ava", "--out", str(out), "--videos", "2"]
    small = ["--size", "96x64", "--actors", "2", "--workers", "1"]
    assert cli.main([*args, "--seconds", "5", *small]) == 0
    assert sorted(os.listdir(out)) == sorted([*NAMES, "synthetic_ava.json", "videos"])
    info = decode.probe(str(next((out / "videos").iterdir())))
    assert (info.num_frames, info.fps, info.height, info.width) == (150, 30, 64, 96)
    assert cli.main([*args, "--seconds", "4"]) == 2
    assert "--seconds must be at least 5" in capsys.readouterr().err
