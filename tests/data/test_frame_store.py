"""The frame store (`vmp make-frames`, `data.source=frames`): clips equal the video files' up to
JPEG error, the nearest stored frame with --every, the same training batches as from the video
files, resumable packing, broken videos listed, corrupt records skipped and counted, and a store
unfit for the config named before any work."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.data.conftest import broken_files
from tests.data.test_pipeline import _config, _take
from vmp_jax import cli
from vmp_jax.data import (
    frame_packing,
    frame_store,
    listing,
    pipeline,
    sampling,
    sources,
    transforms,
)

SMALL = frame_packing.Settings(videos_per_shard=4)


def _pack(root: str, out: str, settings=SMALL, split="train.txt"):
    items = listing.read_list_file(os.path.join(root, split), root)
    return items, frame_packing.pack(items, out, settings, workers=1)


@pytest.fixture(scope="module")
def store(motion_dataset, tmp_path_factory) -> str:
    """The motion dataset's 24 train videos packed by the command, 4 videos a shard."""
    out = str(tmp_path_factory.mktemp("store") / "train")
    argv = ["make-frames", "--list", os.path.join(motion_dataset, "train.txt")]
    argv += ["--data-root", motion_dataset, "--out", out, "--videos-per-shard", "4"]
    assert cli.main([*argv, "--workers", "1"]) == 0
    return out


def test_stored_clips_equal_the_video_clips_up_to_jpeg_error(motion_dataset, store, seed):
    videos = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    stored = frame_store.open_store(store)
    assert [v.video_id for v in stored] == [v.video_id for v in videos]
    assert [v.label for v in stored] == [v.label for v in videos]
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(videos), 4, replace=False):
        plan = sampling.train_indices("segment", 16, 8, 1, rng)
        from_store = stored[i].read(plan).astype(np.float32)  # (8, 48, 48, 3)
        from_video = videos[i].read(plan).astype(np.float32)
        other = videos[(i + 1) % len(videos)].read(plan).astype(np.float32)
        round_trip = [
            frame_store.decode_jpeg(frame_store.encode_jpeg(f, 90), "")
            for f in from_video.astype(np.uint8)
        ]
        np.testing.assert_array_equal(from_store, np.stack(round_trip))  # (no resize at 48 px)
        # JPEG q90 4:2:0 on 48 px textures: 2-4.2 of 255 on average, 25-60 between videos.
        assert np.abs(from_store - from_video).mean() < 6
        assert np.abs(other - from_video).mean() > 12


def test_every_kth_frame_reads_the_nearest_stored_one(motion_dataset, store, tmp_path):
    _, summary = _pack(motion_dataset, str(tmp_path / "k3"), frame_packing.Settings(every=3))
    assert summary["records"] == 24 * 6  # frames 0, 3, ..., 15 of 16
    all_frames, every_3rd = frame_store.open_store(store), frame_store.open_store(tmp_path / "k3")
    indices = np.arange(16)
    nearest = np.minimum(np.round(indices / 3), 5).astype(int) * 3  # 0 0 3 3 3 6 ...
    for i in (0, 7):
        np.testing.assert_array_equal(every_3rd[i].read(indices), all_frames[i].read(nearest))
        assert not np.array_equal(every_3rd[i].read([1, 2]), all_frames[i].read([1, 2]))


def test_training_batches_from_the_store_match_the_video_files(motion_dataset, store):
    """Everything else of the recipe is unchanged: the same videos, labels and augmentation
    draws, the pixels within JPEG error."""
    settings = {"data.repeated_aug": 2, "data.randaug_n": 2, "data.erase_prob": 0.0}
    from_videos = _take(pipeline.train_dataset(_config(motion_dataset, **settings)), 2)
    config = _config(motion_dataset, **settings, **{"data.source": "frames"})
    config.data.train_list = store
    from_store = _take(pipeline.train_dataset(config), 2)
    for a, b in zip(from_videos, from_store, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["label"], b["label"])
        assert np.abs(a["video"] - b["video"]).mean() < 0.1  # normalised units (std ~ 58)


def test_augmenting_on_the_device_places_frames_on_a_canvas_sized_to_the_store(
    motion_dataset, store
):
    """data.canvas None: the store's largest frames (48 x 48 here), not the 320 x 576 default."""
    config = _config(motion_dataset, **{"data.source": "frames", "data.augment_on": "device"})
    config.data.train_list = store
    assert config.data.canvas is None
    (batch,) = _take(pipeline.train_dataset(config), 1)
    assert batch["video"].shape == (4, 4, 48, 48, 3) and batch["video"].dtype == np.uint8
    assert batch["rows_coef"].shape[0] == 4


def test_frames_decoded_onto_the_canvas_equal_the_frames_placed_there(store):
    """`read` and `read_onto` (augment_on=device) against the stored JPEGs decoded by Pillow
    and placed at the top left of a zeroed canvas by hand: a canvas as wide as the frames
    (decoded in place), wider (copied across), taller (zero rows below), and a plan that
    repeats frames; a canvas smaller than the frames or a frame of another size is refused."""
    video = frame_store.open_store(store)[3]  # 48 x 48 frames
    plan = np.array([9, 0, 0, 15, 4, 9])
    frames = _decoded_by_pillow(video, plan)  # (6, 48, 48, 3)
    assert not np.array_equal(frames[0], frames[1])  # frames 9 and 0 differ (motion)
    np.testing.assert_array_equal(video.read(plan), frames)
    for canvas in [(48, 48), (64, 48), (48, 56), (64, 72)]:
        expected = np.zeros((len(plan), *canvas, 3), np.uint8)
        expected[:, :48, :48] = frames
        np.testing.assert_array_equal(video.read_onto(plan, canvas), expected)
        placed, *size = pipeline.frames_on_canvas(video, plan, canvas)
        np.testing.assert_array_equal(placed, expected)
        assert size == [48, 48]
    with pytest.raises(ValueError, match="exceed"):
        video.read_onto(plan, (40, 48))
    jpeg = frame_store.encode_jpeg(np.zeros((48, 40, 3), np.uint8), 90)
    with pytest.raises(frame_store.decode.DecodeError, match="48x40 frame"):
        frame_store.decode_jpeg(jpeg, "v", into=np.empty((48, 48, 3), np.uint8))


def _decoded_by_pillow(video, plan) -> np.ndarray:
    """uint8 (len(plan), H, W, 3): the stored frame nearest each index, its record decoded by
    Pillow (not the store's own decode path)."""
    jpegs = video.records.read([video.first + round(i / video.every) for i in plan])
    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])


def test_frames_resized_down_anyway_are_decoded_at_a_reduced_size(store):
    """Eval views from a store packed larger than they need: libjpeg decodes at 1/2, 1/4 or
    1/8 where the short side stays at least the views' (DCT scaling), within resampling and
    JPEG error of a full decode resized alike."""
    sides = (0, 224, 160, 80, 40, 39)
    assert [frame_store.dct_reduction(320, 428, s) for s in sides] == [1, 1, 2, 4, 8, 8]
    videos = frame_store.open_store(store)
    plan = np.array([3, 9, 9, 0])
    full, other = videos[5].read(plan), videos[12].read(plan)  # (4, 48, 48, 3)
    for short_side, reduction in ((32, 1), (24, 2), (12, 4), (6, 8)):
        frames = videos[5].read(plan, short_side=short_side)
        assert frames.shape == (4, 48 // reduction, 48 // reduction, 3)
        np.testing.assert_array_equal(
            pipeline.read_for_short_side(videos[5], plan, short_side), frames
        )
        views = [transforms.resize_short_side(f, short_side) for f in (frames, full, other)]
        a, b, c = (v.astype(np.float32) for v in views)
        assert np.abs(a - b).mean() < 5  # 0 at 1/1, 1.7-2.8 reduced (motion textures)
        assert np.abs(c - b).mean() > 15  # another video: 26-63


def test_an_interrupted_packing_resumes_where_it_stopped(
    motion_dataset, store, tmp_path, monkeypatch
):
    out = str(tmp_path / "resumed")
    write_shard = frame_packing._write_shard

    def crash_after_two(out_, shard, results):
        if shard == 2:
            raise KeyboardInterrupt  # interrupted while packing the third shard
        write_shard(out_, shard, results)

    monkeypatch.setattr(frame_packing, "_write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _pack(motion_dataset, out)
    with pytest.raises(frame_store.StoreError, match="unfinished.*make-frames"):
        frame_store.open_store(out)
    assert not os.path.exists(os.path.join(out, "index.json"))  # written with store.json
    with open(os.path.join(out, "index.json"), "wb") as f:  # a stale index: rewritten
        f.write(frame_store.index_bytes(frame_store.make_index([], [])))
    monkeypatch.setattr(frame_packing, "_write_shard", write_shard)
    packed = []
    pack_video = frame_packing.pack_video
    monkeypatch.setattr(
        frame_packing, "pack_video", lambda job: packed.append(1) or pack_video(job)
    )
    _pack(motion_dataset, out)
    assert len(packed) == 24 - 8  # the two finished shards were kept
    for name in sorted(os.listdir(store)):  # the same bytes as an uninterrupted packing
        with open(os.path.join(store, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
            assert a.read() == b.read(), name

    with pytest.raises(frame_store.StoreError, match=r"other settings.*quality: 90 -> 80"):
        _pack(motion_dataset, out, frame_packing.Settings(quality=80, videos_per_shard=4))


def _fields(videos) -> list[tuple]:
    return [
        (v.first, v.count, v.num_frames, v.label, v.video_id, v.height, v.width) for v in videos
    ]


def test_the_store_opens_from_its_index_and_a_store_packed_before_it_still_opens(
    motion_dataset, store, tmp_path, monkeypatch
):
    """A store's tables are read from index.json (no shard's table read); a store packed
    before the index (no index.json, none named in store.json) opens from its shards' tables
    to the same videos; an index that is missing or not the one store.json names is refused,
    and running the packing again rewrites it."""
    indexed = frame_store.open_store(store)
    assert len(indexed.summary["shards"]) == 6 and len(indexed) == 24
    assert indexed[5].first == 5 * 16 and indexed[5].records is indexed[0].records
    copy = tmp_path / "old"
    shutil.copytree(store, copy)
    read_json = frame_store.read_json
    read = []
    monkeypatch.setattr(frame_store, "read_json", lambda p: read.append(p) or read_json(p))
    assert _fields(frame_store.open_store(copy)) == _fields(indexed)
    assert [os.path.basename(p) for p in read] == ["store.json"]  # the index, no shard table

    summary = read_json(str(copy / "store.json"))
    del summary["index"]
    frame_store.write_json(str(copy / "store.json"), summary)
    os.remove(copy / "index.json")
    read.clear()
    assert _fields(frame_store.open_store(copy)) == _fields(indexed)
    assert len(read) == 1 + 6  # store.json, then each shard's table

    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    os.remove(broken / "index.json")
    with pytest.raises(frame_store.StoreError, match="index.json is missing.*make-frames"):
        frame_store.open_store(broken)
    table = json.loads((copy / "shard-00000.json").read_text())  # one shard's table only
    (broken / "index.json").write_bytes(frame_store.index_bytes(table))
    with pytest.raises(frame_store.StoreError, match="not the index store.json names"):
        frame_store.open_store(broken)
    monkeypatch.setattr(frame_packing, "pack_video", None)  # every shard is there already
    _pack(motion_dataset, str(broken))
    assert _fields(frame_store.open_store(broken)) == _fields(indexed)


def test_make_frames_leaves_broken_videos_out_and_lists_them(motion_dataset, tmp_path, capsys):
    bad = broken_files(str(tmp_path))
    good = os.path.join(motion_dataset, "videos", "right", "right_0005.mp4")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("".join(f"{p} 0\n" for p in [good, *bad.values(), good]))
    out = str(tmp_path / "store")
    assert cli.main(["make-frames", "--list", str(mixed), "--out", out, "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert "unreadable: 4 videos, left out" in printed
    for reason, path in bad.items():
        assert printed.count(f"{path}: {reason}") == 1
    assert "stored 2 videos (32 frames" in printed
    assert len(frame_store.open_store(out)) == 2


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_a_corrupt_record_is_skipped_and_counted(motion_dataset, store, tmp_path, augment_on):
    copy = tmp_path / "corrupt"
    copy.mkdir()
    for name in os.listdir(store):
        with open(os.path.join(store, name), "rb") as f:
            data = bytearray(f.read())
        if name == "shard-00000.array_record":
            data[100:4000] = bytes(3900)  # the first frames of the first video
        (copy / name).write_bytes(bytes(data))
    overrides = {"data.source": "frames", "data.batch_size": 24, "data.augment_on": augment_on}
    config = _config(motion_dataset, **overrides)
    config.data.train_list = str(copy)
    (batch,) = _take(pipeline.train_dataset(config), 1)
    assert batch["skipped"].sum() >= 1
    assert "corrupt stored frame" in "\n".join(batch["errors"])
    assert batch["video"].shape[0] == 24


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"data.img_size": 64, "model.img_size": 64, "data.short_side": 64},
            "short side 48, below",
        ),
        ({"data.sampling": "dense", "data.sampling_rate": 2}, "every 4th frame.*sampling_rate=2"),
        ({"data.num_frames": 8, "model.num_frames": 8}, r"right_\d+.mp4 keeps 4 frames"),
        ({"data.augment_on": "device", "data.canvas": "(40, 64)"}, r"\(48x48\) exceed data.canvas"),
    ],
)
def test_a_store_unfit_for_the_config_is_named_before_any_work(
    motion_dataset, tmp_path, overrides, message
):
    _pack(motion_dataset, str(tmp_path / "k4"), frame_packing.Settings(every=4))
    config = _config(motion_dataset, **{"data.source": "frames", **overrides})
    config.data.train_list = str(tmp_path / "k4")
    with pytest.raises(frame_store.StoreError, match=message):
        sources.open_source(config.data, "train")


def test_missing_store_and_bad_settings_are_named(tmp_path, capsys):
    config = _config(str(tmp_path), **{"data.source": "frames"})
    with pytest.raises(frame_store.StoreError, match=f"no frame store at {tmp_path}.*make-frames"):
        sources.open_source(config.data, "val")
    argv = ["make-frames", "--list", str(tmp_path / "none.txt"), "--out", str(tmp_path / "s")]
    assert cli.main([*argv, "--quality", "0"]) == 2
    assert "--quality must be in 1..100" in capsys.readouterr().err
    assert cli.main(argv) == 2
    assert "list file not found" in capsys.readouterr().err
