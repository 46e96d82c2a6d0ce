"""Training batches written in place (`pipeline.LoadBatch`, `batch_memory`): bit for bit the
batches of each video's example made on its own and stacked, as the pipeline made them before;
a reused canvas ends as a fresh one; a slot is reused only once the batch handed out from it
(and every view of it) is gone, so a batch kept is never overwritten; a worker's slots leave
nothing in /dev/shm, even when the training process is killed."""

import contextlib
import gc
import mmap
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import grain
import numpy as np
import pytest

from tests.data.test_pipeline import _config, _take
from vmp_jax.data import batch_memory, frame_packing, frame_store, listing, pipeline, sources
from vmp_jax.experiment import REPO_ROOT


@pytest.fixture(scope="module")
def store(motion_dataset, tmp_path_factory) -> str:
    """The motion dataset's 24 train videos (48 x 48) as a frame store, 4 videos a shard."""
    out = str(tmp_path_factory.mktemp("store") / "train")
    items = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    frame_packing.pack(items, out, frame_packing.Settings(videos_per_shard=4), workers=1)
    return out


def _stacked(config, count: int) -> list[dict]:
    """The first `count` training batches as the pipeline made them before in-place batches:
    each video's example by a Grain random map (`LoadTrain`), stacked by Grain's batch, the
    repeated clips flattened. One host."""
    source = sources.open_source(config.data, "train")
    s = pipeline.ClipSettings.from_config(config, source)
    stream = grain.MapDataset.range(len(source)).shuffle(seed=config.seed).repeat()
    stream = stream.random_map(pipeline.LoadTrain(source, s), seed=config.seed)
    shares = stream.batch(config.data.batch_size // s.repeated_aug)
    return [_flatten(shares[j]) for j in range(count)]


def _flatten(share: dict) -> dict:
    repeats = share["label"].shape[1]
    per_clip = [k for k in share if k in ("video", *pipeline.PLANS)]
    return share | {
        **{k: share[k].reshape(-1, *share[k].shape[2:]) for k in per_clip},
        "label": share["label"].reshape(-1),
        "index": np.repeat(share["index"], repeats),
    }


def _slots_of(workers: list[str]) -> list[str]:
    """The slots of these worker processes (pids) still named in /dev/shm."""
    files = os.listdir(batch_memory.SHM_DIR)
    return [f for f in files if f.startswith("vmp-batch-") and f.split("-")[2] in workers]


def _assert_identical(batches: list[dict], expected: list[dict]) -> None:
    assert len(batches) == len(expected)
    for batch, reference in zip(batches, expected, strict=True):
        assert sorted(batch) == sorted(reference)
        for key, value in reference.items():
            assert batch[key].dtype == value.dtype, key
            np.testing.assert_array_equal(batch[key], value, err_msg=key)


def _store_config(motion_dataset, store, **overrides):
    config = _config(motion_dataset, **{"data.source": "frames", **overrides})
    config.data.train_list = store
    return config


def _corrupt_copy(store: str, folder) -> str:
    """The store with the first video's first frames zeroed (read errors, replaced videos)."""
    folder.mkdir()
    for name in os.listdir(store):
        with open(os.path.join(store, name), "rb") as f:
            data = bytearray(f.read())
        if name == "shard-00000.array_record":
            data[100:4000] = bytes(3900)
        (folder / name).write_bytes(bytes(data))
    return str(folder)


@pytest.mark.parametrize(
    "source,augment_on,canvas,workers",
    [
        ("frames", "device", None, 0),  # decoded straight into the batch (48 x 48 canvas)
        ("frames", "device", (56, 64), 2),  # frames narrower than the canvas; workers' slots
        ("frames", "host", None, 0),  # float32 clips stacked into the batch
        ("video", "device", (56, 64), 0),  # a video file's frames copied onto the canvas
    ],
)
def test_in_place_batches_equal_the_stacked_ones(
    motion_dataset, store, seed, source, augment_on, canvas, workers
):
    overrides = {"data.augment_on": augment_on, "data.repeated_aug": 2, "data.num_workers": workers}
    if source == "frames":
        config = _store_config(motion_dataset, store, **overrides)
    else:
        config = _config(motion_dataset, **overrides)
    config.seed, config.data.canvas = seed, canvas
    _assert_identical(_take(pipeline.train_dataset(config), 7), _stacked(config, 7))


def test_videos_replacing_unreadable_ones_are_the_same_as_before(
    motion_dataset, store, tmp_path, seed
):
    """A corrupt record fails mid-decode into the batch; the video drawn in its place (from the
    element's random stream as it stood) overwrites the slot whole."""
    corrupt = _corrupt_copy(store, tmp_path / "corrupt")
    config = _store_config(motion_dataset, corrupt, **{"data.augment_on": "device"})
    config.seed, config.data.batch_size = seed, 24
    (batch,) = _take(pipeline.train_dataset(config), 1)
    assert batch["skipped"].sum() >= 1
    _assert_identical([batch], _stacked(config, 1))


def test_a_reused_canvas_ends_as_a_fresh_one(store, seed):
    """decode_onto and on_canvas write every byte of the array they are given (the padding
    zeroed): a slot that held another batch's clips, here all 255, ends as zeros would."""
    video = frame_store.open_store(store)[seed % 24]  # 48 x 48 frames
    plan = np.array([9, 0, 0, 15])
    for canvas in [(48, 48), (64, 48), (48, 56), (64, 72)]:
        dirty = np.full((4, *canvas, 3), 255, np.uint8)
        np.testing.assert_array_equal(
            video.read_onto(plan, canvas, into=dirty), video.read_onto(plan, canvas)
        )
        dirty = np.full((4, *canvas, 3), 255, np.uint8)
        placed, h, w = pipeline.on_canvas(video.read(plan), canvas, into=dirty)
        assert placed is dirty and (h, w) == (48, 48)
        np.testing.assert_array_equal(placed, pipeline.on_canvas(video.read(plan), canvas)[0])
    with pytest.raises(ValueError, match=r"C-contiguous uint8 \(4, 48, 48, 3\)"):
        video.read_onto(plan, (48, 48), into=np.zeros((4, 48, 96, 3), np.uint8)[:, :, ::2])


@pytest.mark.parametrize("shared", [False, True])
def test_a_slot_is_reused_only_once_every_view_of_its_batch_is_gone(shared):
    """In one process: the slots of the training process, or (shared) a worker's with the
    training process's side (Attach)."""
    slots, attach = batch_memory.Slots(shared, max_slots=2), batch_memory.Attach()
    shape = (2, 3, 5)

    def hand_over(value: int) -> np.ndarray:
        array, handed = slots.take(shape, np.uint8)
        array[...] = value
        if not shared:
            assert handed is array
            return handed
        assert isinstance(handed, batch_memory.SlotRef)
        path = os.path.join(batch_memory.SHM_DIR, handed.name)
        batch = attach({"video": handed, "label": 7})
        assert not os.path.exists(path)  # unlinked once mapped: nothing left in /dev/shm
        return batch["video"]

    first = hand_over(1)
    view = first[1:].reshape(-1)  # a view keeps the batch (and its slot)
    del first
    gc.collect()
    second = hand_over(2)  # the first slot is still held: a new one
    np.testing.assert_array_equal(view, 1)
    array, handed = slots.take(shape, np.uint8)  # both held and no more allowed: a new array
    assert handed is array and not isinstance(array.base, mmap.mmap)
    del view, second
    gc.collect()
    reused = hand_over(3)
    assert len(slots._slots) == 2 and (reused == 3).all()


def test_a_workers_batch_carries_its_other_arrays_in_its_slot(seed):
    """`Slots.pack`: a worker's batch's other arrays (labels, crop plans, error strings) travel
    in the video's slot, not in a shared-memory object of Grain's each, and come out as copies:
    keeping one keeps no slot. One that does not fit after the video travels as it is."""
    rng = np.random.default_rng(seed)
    slots, attach = batch_memory.Slots(shared=True, max_slots=1), batch_memory.Attach()
    array, handed = slots.take((2, 3, 5), np.uint8)
    array[...] = 1
    others = {
        "rows_coef": rng.integers(-(2**31), 2**31, (2, 7, 3), np.int32),
        "label": rng.integers(0, 400, 2).astype(np.int32),
        "errors": np.array(["", "a.mp4: truncated"]),
        "big": np.zeros(batch_memory.extra_room(array.nbytes) + 1, np.uint8),
        "count": 3,
    }
    packed = slots.pack({"video": handed, **others})
    carried = [k for k, v in packed.items() if isinstance(v, batch_memory.SlotRef)]
    assert carried == ["video", "rows_coef", "label", "errors"]
    assert packed["big"] is others["big"] and packed["count"] == 3
    batch = attach(packed)
    for key in ("rows_coef", "label", "errors"):
        assert type(batch[key]) is np.ndarray and batch[key].dtype == others[key].dtype
        np.testing.assert_array_equal(batch[key], others[key], err_msg=key)
    kept = batch["label"]
    assert kept.base is None  # a copy, not a view of the slot
    del batch, array
    gc.collect()
    assert slots._slots[0].free  # released: the label kept does not hold it
    np.testing.assert_array_equal(kept, others["label"])


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_kept_are_never_overwritten_and_slots_are_reused(
    motion_dataset, store, seed, workers
):
    """16 batches: every other one kept to the end, the rest dropped at once (their slots reused
    for later batches); each equals the stacked pipeline's batch, when it came and at the end.
    A worker's batch has its small arrays in its slot (`Slots.pack`). Closing the iterator
    stops the workers at once (nothing left to flush to the training process: Grain kills a
    worker that has not stopped after 25 s) and leaves no slot named."""
    config = _store_config(motion_dataset, store, **{"data.augment_on": "device"})
    config.seed, config.data.num_workers, config.data.canvas = seed, workers, (56, 64)
    expected = _stacked(config, 16)
    iterator = iter(pipeline.train_dataset(config))
    kept, slots = [], []
    try:
        for j in range(16):
            batch = next(iterator)
            _assert_identical([batch], expected[j : j + 1])
            slots.append(batch["video"].base)  # the slot's memory (held by Slots or Attach)
            small = [batch[k] for k in batch if k != "video"]  # a worker's: in the slot too,
            assert all(type(v) is np.ndarray for v in small)  # no shared memory of Grain's
            if j % 2 == 0:
                kept.append(batch)
            del batch
    finally:
        pids = [str(p.pid) for p in multiprocessing.active_children()]
        start = time.monotonic()
        iterator.close()
        closing = time.monotonic() - start
    assert closing < 15 and not _slots_of(pids)
    _assert_identical(kept, expected[::2])
    assert all(isinstance(m, mmap.mmap) for m in slots)  # each batch in a slot, none copied
    assert len({id(m) for m in slots}) < 16  # the dropped batches' slots taken again


# A training process whose loader has 2 workers: it prints their pids once its first batch is
# in, then waits to be killed.
LOADER = f"""
import multiprocessing, sys, time
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.data.test_pipeline import _config
from vmp_jax.data import pipeline
data = iter(pipeline.train_dataset(_config(sys.argv[1], **{{"data.num_workers": 2}})))
next(data)
print(*[p.pid for p in multiprocessing.active_children()], flush=True)
time.sleep(120)
"""


def test_a_killed_training_process_leaves_no_slot_in_dev_shm(motion_dataset):
    """SIGKILL to the training process: its workers' slots that it had not mapped yet (the
    batches in flight) are unlinked by the resource tracker once every process is gone."""
    loader = subprocess.Popen(
        [sys.executable, "-c", LOADER, motion_dataset],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers = loader.stdout.readline().split()
    assert len(workers) >= 2, loader.communicate(timeout=60)
    try:
        deadline = time.monotonic() + 30
        while not _slots_of(workers) and time.monotonic() < deadline:  # the next batches'
            time.sleep(0.05)
        assert _slots_of(workers)
        os.kill(loader.pid, signal.SIGKILL)
        loader.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while _slots_of(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _slots_of(workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loader.pid, signal.SIGKILL)
