"""AVA clips and boxes: the clip index rule at both ends, the detection threshold, boxes that move
with the pixels through crop, scale and flip, batches from the generated dataset (videos and a
frame store), and bad input left out and counted."""

import dataclasses
import logging

import numpy as np
import pytest

from vmp_jax.data import ava, ava_clips, frame_packing, listing, synthetic_ava


def test_clip_indices_centre_on_the_keyframe():
    # Second 903 of the cut is frame (903 - 900) x 30 = 90: the clip's frame T // 2.
    got = ava_clips.clip_indices(903, 8, 4, 450)
    np.testing.assert_array_equal(got, [74, 78, 82, 86, 90, 94, 98, 102])
    assert ava_clips.clip_indices(903, 5, 2, 450)[5 // 2] == 90
    np.testing.assert_array_equal(ava_clips.clip_indices(5, 4, 3, 300, fps=25, cut_start=0),
                                  [119, 122, 125, 128])  # fmt: skip


def test_clip_indices_clamp_at_both_ends():
    np.testing.assert_array_equal(ava_clips.clip_indices(900, 6, 2, 100), [0, 0, 0, 0, 2, 4])
    np.testing.assert_array_equal(ava_clips.clip_indices(901, 4, 10, 40), [10, 20, 30, 39])
    # The last frame itself is a keyframe; one past it is not.
    assert ava_clips.clip_indices(903, 4, 1, 91).tolist() == [88, 89, 90, 90]
    with pytest.raises(ava_clips.KeyframeOutsideVideo, match="frame 90 .* 90 frames"):
        ava_clips.clip_indices(903, 4, 1, 90)
    with pytest.raises(ava_clips.KeyframeOutsideVideo, match="frame -30"):
        ava_clips.clip_indices(899, 4, 1, 90)


def test_detections_at_the_threshold_and_the_top_box_always():
    scores = np.array([0.5, 0.9, 0.8, 0.95, 0.1])
    assert ava_clips.select_detections(scores, 0.8).tolist() == [3, 1, 2]
    assert ava_clips.select_detections(np.array([0.3, 0.6, 0.2]), 0.8).tolist() == [1]
    assert ava_clips.select_detections(np.zeros(0), 0.8).tolist() == []


def _box_frame(rng, h, w):
    """A noise frame with one solid box: (uint8 (1, h, w, 3), normalised box (1, 4))."""
    frame = rng.integers(0, 100, (1, h, w, 3)).astype(np.uint8)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    x1, y1 = x0 + rng.integers(w // 6, w // 2), y0 + rng.integers(h // 6, h // 2)
    frame[:, y0:y1, x0:x1] = (255, 255, 0)
    return frame, np.array([[x0 / w, y0 / h, x1 / w, y1 / h]], np.float32)


@pytest.mark.parametrize("trial", range(6))
def test_boxes_move_with_the_pixels(seed, trial):
    """Training placements (scale, crop, pad, flip) and the evaluation's fit: the drawn box is
    where `place_boxes` puts it, to a pixel."""
    rng = np.random.default_rng([seed, trial])
    h, w = int(rng.integers(60, 120)), int(rng.integers(60, 160))
    frame, box = _box_frame(rng, h, w)
    if trial == 0:
        p = ava_clips.eval_placement(h, w, (64, 80))
    else:
        p = ava_clips.train_placement(h, w, (64, 64), 64, (1.0, 1.6), True, rng)
        p = ava_clips.Placement(p.resized, p.offset, p.size, flip=trial % 2 == 1)
    out = ava_clips.place_frames(frame, p)[0].astype(int)  # (H, W, 3)
    x1, y1, x2, y2 = ava_clips.place_boxes(box, h, w, p)[0]
    yellow = (out[..., 0] > 200) & (out[..., 1] > 200) & (out[..., 2] < 60)
    ys, xs = np.nonzero(yellow)
    if x2 - x1 < 2 or y2 - y1 < 2:  # cropped away: nothing of it left in the clip
        assert yellow.sum() <= 2 * max(x2 - x1, y2 - y1) + 2
        return
    assert len(xs), p
    # Every yellow pixel lies in the box, and the box is filled.
    assert xs.min() >= np.floor(x1) - 1 and xs.max() <= np.ceil(x2) and ys.min() >= np.floor(y1) - 1
    assert ys.max() <= np.ceil(y2)
    assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
    assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5


def test_jittered_boxes_stay_valid(seed):
    rng = np.random.default_rng(seed)
    boxes = np.array([[0.0, 0.0, 0.01, 1.0], [0.4, 0.4, 0.6, 0.9], [0.99, 0.5, 1.0, 0.51]])
    moved = ava_clips.jitter_boxes(boxes.astype(np.float32), 0.3, rng)
    assert (moved >= 0).all() and (moved <= 1).all()
    assert (moved[:, 2:] > moved[:, :2]).all()
    assert not np.allclose(moved, boxes)
    sides = np.tile(boxes[:, 2:] - boxes[:, :2], 2)  # (N, 4) w, h, w, h
    assert (np.abs(moved - boxes) <= 0.3 * sides + 1e-3).all()


# The generated dataset, read through the clips.


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ava")
    spec = synthetic_ava.Spec(str(out), videos=2, seconds=6, val_fraction=0.5, seed=3)
    synthetic_ava.make_dataset(spec, workers=1)
    return out


def _keyframes(path, detections=False) -> list[ava_clips.KeyframeBoxes]:
    read = ava.read_detections if detections else ava.read_ground_truth
    return ava_clips.keyframes_of(read(str(path)))


def test_open_split_reads_avas_layout(dataset):
    config = ava_clips.ClipConfig(num_frames=2, img_size=64, max_boxes=4)
    train = ava_clips.open_split(str(dataset), "train", config, train=True)
    assert [k.key for k in train.keyframes] == sorted(ava.read_ground_truth(
        str(dataset / "ava_train_v2.2.csv")))  # fmt: skip
    val = ava_clips.open_split(str(dataset), "val", config, train=False)
    excluded = ava.read_excluded(str(dataset / "ava_val_excluded_timestamps_v2.2.csv"))
    detected = ava.read_detections(str(dataset / "ava_val_predicted_boxes.csv"))
    assert excluded and excluded <= set(detected)
    assert [k.key for k in val.keyframes] == sorted(set(detected) - excluded)
    assert all(not k.labels.any() for k in val.keyframes)
    gt = ava_clips.open_split(str(dataset), "val", config, train=False, boxes="gt")
    assert all((k.scores == 1).all() and k.labels.any(1).all() for k in gt.keyframes)
    with pytest.raises(ValueError, match="boxes must be 'detected' or 'gt'"):
        ava_clips.open_split(str(dataset), "val", config, train=False, boxes="proposals")


def _colour_in_boxes(batch, config):
    """Each real box of each clip holds its pose's body colour at the keyframe (frame T // 2)."""
    video = batch["video"]
    if config.normalize:
        video = video * ava_clips.transforms.STD + ava_clips.transforms.MEAN
    for b in range(len(video)):
        frame = video[b, config.num_frames // 2].astype(int)
        for k in np.nonzero(batch["box_mask"][b])[0]:
            x1, y1, x2, y2 = np.round(batch["boxes"][b, k]).astype(int)
            pose = [a for a in synthetic_ava.POSES if batch["labels"][b, k, a - 1]]
            colour = np.array(synthetic_ava.ACTION_COLOURS[pose[0]])
            region = np.abs(frame[y1:y2, x1:x2] - colour).max(-1) < 60
            assert region.mean() > 0.2, (b, k, pose)


def test_train_batches_carry_aligned_boxes_and_labels(dataset):
    keyframes = _keyframes(dataset / "ava_train_v2.2.csv")
    videos = ava_clips.find_videos(str(dataset / "videos"))
    config = ava_clips.ClipConfig(num_frames=4, frame_stride=4, img_size=64, max_boxes=3)
    clips = ava_clips.AvaClips.open(keyframes, videos, config, train=True)
    assert len(clips) == len(keyframes) and clips.left_out == 0
    batch = next(iter(ava_clips.train_dataset(clips, 4, seed=0, num_threads=0)))
    assert batch["video"].shape == (4, 4, 64, 64, 3) and batch["video"].dtype == np.float32
    assert batch["boxes"].shape == (4, 3, 4) and batch["labels"].shape == (4, 3, 80)
    assert batch["box_mask"].dtype == bool and batch["person_scores"].shape == (4, 3)
    assert (batch["boxes"][~batch["box_mask"]] == 0).all()
    assert (batch["boxes"] >= 0).all() and (batch["boxes"] <= 64).all()
    for b, index in enumerate(batch["keyframe"]):
        kf = clips.keyframes[index]
        mask = batch["box_mask"][b]
        assert mask.sum() <= len(kf.boxes)
        # Labels are the keyframe's, box by box (the jittered source box is nearest its own).
        for k in np.nonzero(mask)[0]:
            nearest = np.abs(kf.boxes - batch["source_boxes"][b, k]).sum(-1).argmin()
            np.testing.assert_array_equal(batch["labels"][b, k], kf.labels[nearest])
    _colour_in_boxes(batch, config)


def test_eval_batches_use_detections_over_the_threshold(dataset):
    detections = _keyframes(dataset / "ava_val_predicted_boxes.csv", detections=True)
    videos = ava_clips.find_videos(str(dataset / "videos"))
    config = ava_clips.ClipConfig(num_frames=4, frame_stride=2, img_size=64, test_size=(48, 64),
                                  max_boxes=4, normalize=False)  # fmt: skip
    clips = ava_clips.AvaClips.open(detections, videos, config, train=False)
    batches = list(ava_clips.eval_dataset(clips, 2, num_threads=0))
    seen = [int(i) for b in batches for i in b["keyframe"] if i >= 0]
    assert sorted(seen) == list(range(len(detections)))  # each keyframe once
    batch = batches[0]
    assert batch["video"].shape == (2, 4, 48, 64, 3) and batch["video"].dtype == np.uint8
    for b, index in enumerate(batch["keyframe"]):
        kf = clips.keyframes[index]
        expected = ava_clips.select_detections(kf.scores, 0.8)
        assert batch["box_mask"][b].sum() == len(expected)
        np.testing.assert_allclose(batch["person_scores"][b, : len(expected)], kf.scores[expected])
        np.testing.assert_allclose(batch["source_boxes"][b, : len(expected)], kf.boxes[expected])
        # 160x120 fits 64x48 exactly: pixels are the normalised box times 64, 48.
        np.testing.assert_allclose(
            batch["boxes"][b, : len(expected)], kf.boxes[expected] * [64, 48, 64, 48], atol=1e-4
        )
    if len(batches[-1]["valid"]) and not batches[-1]["valid"].all():
        assert (batches[-1]["keyframe"][~batches[-1]["valid"]] == -1).all()


def test_a_frame_store_stores_each_video_once_and_reads_the_same_clips(dataset, tmp_path):
    items = listing.read_videos(str(dataset / "train.txt"), str(dataset))
    frame_packing.pack(items, str(tmp_path / "store"), frame_packing.Settings(short_side=120),
                       workers=1)  # fmt: skip
    stored = ava_clips.find_videos(str(tmp_path / "store"))
    files = ava_clips.find_videos(str(dataset / "videos"))
    (video_id,) = stored
    assert stored[video_id].count == 180  # 6 s at 30 fps, once: not once per keyframe
    keyframes = _keyframes(dataset / "ava_train_v2.2.csv")
    config = ava_clips.ClipConfig(num_frames=4, frame_stride=2, img_size=64, max_boxes=3,
                                  normalize=False)  # fmt: skip
    from_store = ava_clips.AvaClips.open(keyframes, stored, config, train=False)
    from_files = ava_clips.AvaClips.open(keyframes, files, config, train=False)
    a, b = from_store.clip(1), from_files.clip(1)
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    assert np.abs(a["video"].astype(int) - b["video"].astype(int)).mean() < 3  # JPEG's loss


def test_bad_videos_and_keyframes_are_left_out_and_counted(dataset, tmp_path, caplog):
    keyframes = _keyframes(dataset / "ava_train_v2.2.csv")
    videos = ava_clips.find_videos(str(dataset / "videos"))
    good = keyframes[0].video_id
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    videos["broken00000"] = listing.VideoFile(str(broken), 0, "broken00000")
    extra = [
        ava_clips.KeyframeBoxes.of("missing0000", 902, [[0.1, 0.1, 0.5, 0.5]], [[12]]),
        ava_clips.KeyframeBoxes.of("missing0000", 903, [[0.1, 0.1, 0.5, 0.5]], [[12]]),
        ava_clips.KeyframeBoxes.of("broken00000", 902, [[0.1, 0.1, 0.5, 0.5]], [[12]]),
        ava_clips.KeyframeBoxes.of(good, 1790, [[0.1, 0.1, 0.5, 0.5]], [[12]]),  # past its end
    ]
    config = ava_clips.ClipConfig(num_frames=4, frame_stride=2, img_size=64, max_boxes=3)
    with caplog.at_level(logging.WARNING):
        clips = ava_clips.AvaClips.open(keyframes + extra, videos, config, train=True)
    assert len(clips) == len(keyframes) and clips.left_out == 4
    assert set(clips.problems) == {"missing0000", "broken00000", good}
    assert "missing file" in clips.problems["missing0000"]
    assert "not a readable video" in clips.problems["broken00000"]
    assert "outside the video's 180 frames" in clips.problems[good]
    assert sum("missing0000" in r.message for r in caplog.records) == 1  # once per video
    assert clips.summary().startswith(f"{len(keyframes)} of {len(keyframes) + 4} keyframes read; 4")


def test_more_boxes_than_the_static_maximum_is_an_error(dataset):
    keyframes = _keyframes(dataset / "ava_train_v2.2.csv")
    videos = ava_clips.find_videos(str(dataset / "videos"))
    counts = [len(k.boxes) for k in keyframes]
    most = max(counts)
    over = sum(n == most for n in counts)
    config = ava_clips.ClipConfig(num_frames=2, img_size=64, max_boxes=most - 1)
    with pytest.raises(ValueError) as error:
        ava_clips.AvaClips.open(keyframes, videos, config, train=True)
    assert str(error.value).startswith(
        f"{over} of {len(keyframes)} keyframes have more ground-truth boxes than "
        f"max_boxes={most - 1}, the static maximum per clip; the largest has {most} boxes"
    )
    # Seven keyframes, six over the limit: the count, the largest, five examples largest first
    box = [[0.1, 0.1, 0.5, 0.5]]
    many = [ava_clips.KeyframeBoxes.of("v", 902 + i, box * n) for i, n in enumerate(
        [2, 5, 3, 1, 6, 4, 5])]  # fmt: skip
    config = ava_clips.ClipConfig(max_boxes=1)
    with pytest.raises(ValueError) as error:
        ava_clips._check_box_counts(many, config, train=True)
    assert str(error.value) == (
        "6 of 7 keyframes have more ground-truth boxes than max_boxes=1, the static maximum "
        "per clip; the largest has 6 boxes (e.g. v,0906 (6), v,0903 (5), v,0908 (5), v,0907 "
        "(4), v,0904 (3), ...): raise max_boxes to at least 6"
    )
    scored = [dataclasses.replace(k, scores=np.linspace(1, 0.5, len(k.boxes))) for k in many]
    # kept at 0.8 (the top box always): 1, 2, 1, 1, 3, 2, 2
    with pytest.raises(ValueError, match=r"^4 of 7 keyframes have more evaluation boxes \(score >= "
                       r"0.8\) than max_boxes=1.*the largest has 3 boxes"):  # fmt: skip
        ava_clips._check_box_counts(scored, config, train=False)
    ava_clips._check_box_counts(many, ava_clips.ClipConfig(max_boxes=6), train=True)


def test_keyframes_without_boxes_are_not_clips(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("v,0902,0.1,0.1,0.5,0.5,12,0\nv,0903\nv,0904,0.1,0.1,0.5,0.5,14,0\n")
    found = ava.read_ground_truth(str(path))
    assert len(found[("v", 903)].boxes) == 0  # the reader keeps the key: the metric counts it
    assert [k.key for k in ava_clips.keyframes_of(found)] == [("v", 902), ("v", 904)]
