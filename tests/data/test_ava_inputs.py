"""Where an AVA run's evaluation boxes and videos come from: `ava.detections` (SlowFast's CSV or
MMAction2's dense-proposals pickle, chosen by extension, local or in a bucket) and `ava.videos`
(one folder or frame store for both splits, as docs/detection.md builds it); a split of which no
keyframe can be read is an error naming the split, the file and the videos' folder."""

import collections
import csv
import os
import pickle

import numpy as np
import pytest

from tests.ava_sets import generated_ava
from vmp_jax import storage
from vmp_jax.data import ava_clips, ava_inputs, ava_pickle, frame_packing, listing
from vmp_jax.experiment import REPO_ROOT, load_config

CONFIG = str(REPO_ROOT / "configs" / "ava_demo.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """One train and one val video of 6 s (keyframes 902-904)."""
    return generated_ava(tmp_path_factory, videos=2, seconds=6, val_fraction=0.5, seed=5)


def _config(root: str, **ava):
    overrides = [f"--config.data.data_root={root}", "--config.ava.max_boxes=8"]
    return load_config(CONFIG, overrides + [f"--config.ava.{k}={v}" for k, v in ava.items()])


def _proposals(csv_path: str) -> dict:
    """The detections CSV as MMAction2's proposals: "video_id,0902" -> float32 (N, 5) rows of
    x1, y1, x2, y2, score, written from the file's text (not through our CSV reader)."""
    found = collections.defaultdict(list)
    with open(csv_path) as f:
        for video_id, timestamp, *box, _action, score in csv.reader(f):
            found[f"{video_id},{int(timestamp):04d}"].append([*map(float, box), float(score)])
    return {key: np.asarray(rows, np.float32) for key, rows in found.items()}


def _video_ids(root: str, *splits: str) -> list[str]:
    """The videos of the splits' ground truth (the docs' `cut -d, -f1 ... | sort -u`)."""
    ids = set()
    for split in splits:
        with open(os.path.join(root, ava_clips.ground_truth_name(split))) as f:
            ids |= {row[0] for row in csv.reader(f)}
    return sorted(ids)


def _evaluation_boxes(clips) -> dict:
    """{key: (boxes, scores)} each keyframe is evaluated on (kept at the score threshold)."""
    return {kf.key: clips.boxes(kf)[::2] for kf in clips.keyframes}


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_a_proposals_pickle_gives_the_csvs_evaluation_boxes(dataset, tmp_path, request, where):
    csv_path = os.path.join(dataset, ava_clips.detections_name("val"))
    data = pickle.dumps(_proposals(csv_path), protocol=pickle.HIGHEST_PROTOCOL)
    if where == "bucket":
        request.getfixturevalue("gcs")
        path = f"gs://vmp-test/ava-proposals-{os.getpid()}/val.FAIR.pkl"
    else:
        path = str(tmp_path / "val.FAIR.pkl")
    storage.write_bytes(path, data)
    from_csv = ava_inputs.open_clips(_config(dataset), "val")
    from_pickle = ava_inputs.open_clips(_config(dataset, detections=path), "val")
    assert ava_inputs.input_paths(_config(dataset, detections=path))[-1] == path
    want, got = _evaluation_boxes(from_csv), _evaluation_boxes(from_pickle)
    assert len(want) >= 2 and list(got) == list(want)
    for key, (boxes, scores) in want.items():
        np.testing.assert_allclose(got[key][0], boxes, atol=1e-6, err_msg=str(key))
        np.testing.assert_allclose(got[key][1], scores, atol=1e-6, err_msg=str(key))
    # the pickle is what is read: a keyframe it lacks is not evaluated
    first, *rest = want
    fewer = _proposals(csv_path)
    del fewer[f"{first[0]},{first[1]:04d}"]
    storage.write_bytes(path, pickle.dumps(fewer))
    fewer_clips = ava_inputs.open_clips(_config(dataset, detections=path), "val")
    assert list(_evaluation_boxes(fewer_clips)) == rest
    # ... and a CSV named by the key is read as one
    again = ava_inputs.open_clips(_config(dataset, detections=csv_path), "val")
    assert list(_evaluation_boxes(again)) == list(want)


def test_a_bad_pickle_is_an_error_naming_it(dataset, tmp_path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"v,0902": np.ones((1, 5))})[:-9])
    other = tmp_path / "other.pkl"
    other.write_bytes(b"video_id,timestamp,x1\n")  # a CSV under a pickle's name
    for path in (truncated, other):
        with pytest.raises(ava_pickle.BadPickleError) as error:
            ava_inputs.open_clips(_config(dataset, detections=str(path)), "val")
        assert str(error.value).startswith(f"{path}: not a readable pickle")


def test_one_frame_store_of_both_splits_serves_both(dataset, tmp_path):
    """docs/detection.md's recipe: one list of every video of both splits, one store, given
    as `ava.videos`; a store of the train videos alone leaves val without a keyframe: an
    error naming the split, its file and the store, before any step."""
    lists = {"all": _video_ids(dataset, "train", "val"), "train": _video_ids(dataset, "train")}
    settings = frame_packing.Settings(short_side=32)
    for name, videos in lists.items():
        (tmp_path / f"{name}.txt").write_text("".join(f"videos/{v}.mp4 0\n" for v in videos))
        items = listing.read_videos(str(tmp_path / f"{name}.txt"), dataset)
        frame_packing.pack(items, str(tmp_path / name), settings, workers=1)
    both = _config(dataset, videos=str(tmp_path / "all"))
    for split in ("train", "val"):
        from_files = ava_inputs.open_clips(_config(dataset), split)
        from_store = ava_inputs.open_clips(both, split)
        assert [k.key for k in from_store.keyframes] == [k.key for k in from_files.keyframes]
        assert from_store.left_out == 0 and len(from_store) >= 2
    train_only = _config(dataset, videos=str(tmp_path / "train"))
    assert len(ava_inputs.open_clips(train_only, "train")) == len(
        ava_inputs.open_clips(both, "train")
    )
    with pytest.raises(ava_clips.NoKeyframesError) as error:
        ava_inputs.open_clips(train_only, "val")
    detections = os.path.join(dataset, ava_clips.detections_name("val"))
    assert str(error.value).startswith(
        f"AVA val: no keyframe of {detections} can be read from the videos in "
        f"{tmp_path / 'train'} (0 of 2 keyframes read; 2 left out (1 videos missing"
    )
    assert "missing file" in str(error.value)


def test_a_split_without_readable_keyframes_is_an_error(dataset, tmp_path):
    (tmp_path / "videos").mkdir()
    config = _config(dataset, videos=str(tmp_path / "videos"))
    truth = os.path.join(dataset, ava_clips.ground_truth_name("train"))
    with pytest.raises(ava_clips.NoKeyframesError) as error:
        ava_inputs.open_clips(config, "train")
    assert str(error.value).startswith(
        f"AVA train: no keyframe of {truth} can be read from the videos in "
        f"{tmp_path / 'videos'} (0 of "
    )
