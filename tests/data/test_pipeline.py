"""Grain pipelines: determinism across worker counts, iterator state save/restore, per-host
sharding, multi-view test batches, and unreadable files skipped and counted."""

import os
import shutil

import jax
import numpy as np
import pytest

from tests.data.conftest import broken_files
from vmp_jax.data import device_augment, pipeline, resample, sources, transforms
from vmp_jax.experiment import REPO_ROOT, load_config


def _config(root: str, **overrides):
    settings = {
        "data.data_root": root,
        "data.train_list": os.path.join(root, "train.txt"),
        "data.val_list": os.path.join(root, "val.txt"),
        "data.batch_size": 4,
        "data.num_workers": 0,
        "data.img_size": 32,
        "data.short_side": 32,
        "model.img_size": 32,
        "data.num_frames": 4,
        "model.num_frames": 4,
        "eval.batch_size": 3,
        **overrides,
    }
    return load_config(REPO_ROOT / "configs" / "demo.py", [f"{k}={v}" for k, v in settings.items()])


def _take(dataset, n: int) -> list[dict]:
    iterator = iter(dataset)
    try:
        return [next(iterator) for _ in range(n)]
    finally:
        iterator.close()


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in ("video", "label", "index"):
            np.testing.assert_array_equal(x[key], y[key])


def test_train_batches_have_the_documented_layout(motion_dataset):
    config = _config(motion_dataset, **{"data.repeated_aug": 2, "data.mixup": 0.8})
    (batch,) = _take(pipeline.train_dataset(config), 1)
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["video"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["index"].shape == (4,) and batch["index"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"][0::2], batch["label"][1::2])  # repeated aug
    np.testing.assert_array_equal(batch["index"][0::2], batch["index"][1::2])
    train = sources.read_list_file(config.data.train_list, motion_dataset)
    assert batch["label"].tolist() == [train[i].label for i in batch["index"]]
    assert batch["skipped"].shape == (2,) and batch["skipped"].sum() == 0


def test_same_seed_same_batches_across_worker_counts(motion_dataset):
    no_workers = _take(pipeline.train_dataset(_config(motion_dataset)), 5)
    two_workers = _take(
        pipeline.train_dataset(_config(motion_dataset, **{"data.num_workers": 2})), 5
    )
    _assert_same(no_workers, two_workers)
    other_seed = _take(pipeline.train_dataset(_config(motion_dataset, seed=1)), 5)
    assert not np.array_equal(no_workers[0]["video"], other_seed[0]["video"])


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_continues_with_the_next_batch(motion_dataset, workers):
    config = _config(motion_dataset, **{"data.num_workers": workers})
    reference = _take(pipeline.train_dataset(config), 9)  # crosses an epoch (24 videos / 4)
    iterator = iter(pipeline.train_dataset(config))
    for _ in range(6):
        next(iterator)
    state = iterator.get_state()
    iterator.close()
    resumed = iter(pipeline.train_dataset(config))
    resumed.set_state(state)
    try:
        _assert_same([next(resumed) for _ in range(3)], reference[6:])
    finally:
        resumed.close()


def test_epochs_are_reshuffled(motion_dataset):
    config = _config(motion_dataset, **{"data.batch_size": 24})  # one batch = one epoch
    first, second = _take(pipeline.train_dataset(config), 2)
    assert sorted(first["label"]) == sorted(second["label"])
    assert not np.array_equal(first["label"], second["label"])


def _host_batches(config, monkeypatch, host: int, hosts: int, n: int) -> list[dict]:
    monkeypatch.setattr(pipeline, "grain_shard", lambda: (host, hosts))
    return _take(pipeline.train_dataset(config), n)


@pytest.mark.parametrize("hosts,repeated_aug", [(2, 1), (3, 2)])
def test_global_batches_do_not_depend_on_the_host_count(
    motion_dataset, monkeypatch, hosts, repeated_aug
):
    """The hosts' batches, concatenated in host order, are the one-host batch: the same videos
    with the same augmentation (5 steps cross the epoch of 24 videos)."""
    config = _config(motion_dataset, **{"data.batch_size": 12, "data.repeated_aug": repeated_aug})
    one = _host_batches(config, monkeypatch, 0, 1, 3 * repeated_aug)
    parts = [_host_batches(config, monkeypatch, h, hosts, len(one)) for h in range(hosts)]
    for i, whole in enumerate(one):
        for key in ("video", "label", "index"):
            np.testing.assert_array_equal(np.concatenate([p[i][key] for p in parts]), whole[key])


def test_each_video_of_an_epoch_is_read_once_by_one_host(motion_dataset, monkeypatch):
    """5 hosts, 24 videos (not a multiple of 5), global batch 10: the first 24 positions of
    the stream (host h reads positions 10 i + 2 h, 10 i + 2 h + 1 at step i) are the list."""
    hosts, batch = 5, 10
    config = _config(motion_dataset, **{"data.batch_size": batch})
    read = {}
    for h in range(hosts):
        for i, b in enumerate(_host_batches(config, monkeypatch, h, hosts, 3)):
            assert b["index"].shape == (batch // hosts,)
            for j, index in enumerate(b["index"].tolist()):
                read[i * batch + h * (batch // hosts) + j] = index
    assert sorted(read) == list(range(30))  # no position read twice
    assert sorted(read[p] for p in range(24)) == list(range(24))


def test_hosts_evaluate_disjoint_shards(motion_dataset, monkeypatch):
    config = _config(motion_dataset, **{"eval.batch_size": 4})
    seen = {}
    for host in range(2):
        monkeypatch.setattr(pipeline, "grain_shard", lambda host=host: (host, 2))
        batches = _take(pipeline.test_dataset(config), 2)
        ids = np.concatenate([b["index"][b["valid"]] for b in batches])
        seen[host] = set(ids.tolist())
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(8))


def test_test_pipeline_gives_every_video_once_with_all_views(motion_dataset):
    config = _config(motion_dataset, **{"eval.num_clips": 2, "eval.num_crops": 3})
    batches = _take(pipeline.test_dataset(config), 3)  # 8 videos, batch 3: one padding
    videos = np.concatenate([b["video"] for b in batches])
    assert videos.shape == (9, 6, 4, 32, 32, 3)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 8 + [False]
    ids = np.concatenate([b["index"] for b in batches])[valid]
    assert sorted(ids.tolist()) == list(range(8))  # positions in the source
    val = sources.read_list_file(config.data.val_list, motion_dataset)
    labels = np.concatenate([b["label"] for b in batches])[valid]
    np.testing.assert_array_equal(labels, [val[i].label for i in ids])
    with pytest.raises(StopIteration):
        iterator = iter(pipeline.test_dataset(config))
        for _ in range(4):
            next(iterator)


def test_unreadable_files_are_skipped_and_counted(motion_dataset, tmp_path, caplog):
    good = os.path.join(motion_dataset, "videos", "right", "right_0005.mp4")
    bad = broken_files(str(tmp_path))
    listing = tmp_path / "mixed.txt"
    lines = [f"{p} 0\n" for p in bad.values()] + [f"{good} 0\n"] * 2
    listing.write_text("".join(lines))
    config = _config(str(tmp_path), **{"data.train_list": str(listing), "data.batch_size": 6})
    (batch,) = _take(pipeline.train_dataset(config), 1)
    assert batch["skipped"].sum() >= 4  # each bad file at least once (it is in the epoch)
    errors = "\n".join(batch["errors"])
    for reason, path in bad.items():
        assert f"{path}: {reason}" in errors
    assert batch["video"].shape[0] == 6  # replaced, not dropped

    val_config = _config(str(tmp_path), **{"data.val_list": str(listing), "eval.batch_size": 6})
    (test,) = _take(pipeline.test_dataset(val_config), 1)
    assert test["valid"].tolist() == [False] * 4 + [True] * 2
    assert test["skipped"].tolist() == [1] * 4 + [0] * 2
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    for path in bad.values():  # read twice or more (train and test), warned about once
        assert sum(f"{path}:" in w for w in warned) == 1, (path, warned)


def test_a_dataset_with_no_readable_file_stops_with_a_clear_error(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("missing1.mp4 0\nmissing2.mp4 1\n")
    config = _config(str(tmp_path), **{"data.train_list": str(listing), "data.batch_size": 2})
    with pytest.raises(pipeline.NoReadableVideos, match="none of the 2 videos could be read"):
        _take(pipeline.train_dataset(config), 1)


def test_labels_outside_the_model_are_an_error(motion_dataset, tmp_path):
    shutil.copy(os.path.join(motion_dataset, "train.txt"), tmp_path / "train.txt")
    config = _config(motion_dataset, **{"model.num_classes": 2})
    with pytest.raises(ValueError, match=r"label [23] is outside 0..1 \(model.num_classes = 2\)"):
        _take(pipeline.train_dataset(config), 2)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("data.sampling", "uniform", "data.sampling must be one of"),
        ("data.crop", "center", "data.crop must be one of"),
        ("data.short_side", 16, r"data.short_side \(16\) must be >= data.img_size"),
        ("data.crop_scale", (0.0, 1.0), "data.crop_scale must satisfy"),
    ],
)
def test_bad_data_settings_stop_at_load(motion_dataset, key, value, message):
    with pytest.raises(ValueError, match=message):
        _config(motion_dataset, **{key: value})


def test_batch_size_must_split_over_hosts_and_repeats(motion_dataset):
    config = _config(motion_dataset, **{"data.batch_size": 5, "data.repeated_aug": 2})
    with pytest.raises(ValueError, match=r"data.batch_size \(5\) must be divisible"):
        pipeline.train_dataset(config)


def test_augmenting_on_the_device_hands_frames_on_a_canvas_with_crop_plans(motion_dataset):
    """data.augment_on=device: the loader hands the decoded frames on the canvas with each
    clip's crop plan; without flip, RandAugment or erasing drawn, the step's crop and resize of
    them is the host path's batch (the same box; the resize within Pillow's rounding)."""
    plain = {"data.flip": False, "data.randaug_n": 0, "data.erase_prob": 0.0}
    plain |= {"data.repeated_aug": 1, "data.batch_size": 2}
    (host,) = _take(pipeline.train_dataset(_config(motion_dataset, **plain)), 1)
    device = _config(motion_dataset, **plain, **{"data.augment_on": "device"})
    device.data.canvas = (56, 64)
    (batch,) = _take(pipeline.train_dataset(device), 1)
    assert batch["video"].dtype == np.uint8 and batch["video"].shape == (2, 4, 56, 64, 3)
    np.testing.assert_array_equal(batch["video"][:, :, 48:], 0)  # 48 px frames, padded
    np.testing.assert_array_equal(batch["index"], host["index"])
    plans = {k: batch[k] for k in resample.PLAN_KEYS}
    crops = jax.vmap(device_augment.crop_resize)(batch["video"], plans)
    as_uint8 = np.round(host["video"] * transforms.STD + transforms.MEAN).astype(int)
    assert np.abs(np.asarray(crops).astype(int) - as_uint8).max() <= 1
    with pytest.raises(ValueError, match="data.augment_on must be one of"):
        _config(motion_dataset, **{"data.augment_on": "gpu"})
    with pytest.raises(ValueError, match=r"data.canvas must be \(height, width\), each >= "):
        _config(motion_dataset, **{"data.augment_on": "device", "data.canvas": "(16, 64)"})
