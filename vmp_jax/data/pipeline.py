"""Grain pipelines: from a source's items to training batches and multi-view test batches.

Train: index -> per-epoch shuffle (seeded) -> each element's random stream (seeded by its
position in the stream, so every batch is the same whatever the worker or host count) ->
batch: decode + augment, each clip written straight into its slot of the batch's array
(`LoadBatch`; in a worker a reused shared-memory slot, `batch_memory`) -> this host's share ->
worker processes. Mixup/cutmix happen on the device, over the global batch (`train.mixing`).
Test: every video once, padded so that every host runs the same number of batches; each
video's views are decoded from one open of the file.

A file that cannot be read (missing, empty, truncated, not a video) is logged with its name and
counted in the batch's `skipped` field (each read that failed) with its message in `errors`: in
training another video (drawn from the failing one's seed) takes its place, so batch shapes and
determinism hold; in testing the video is marked invalid. A file is warned about once per
process, however often it is drawn. If every file fails the pipeline raises `NoReadableVideos`.

Batches (B = per-host batch, V = views, T frames, S = img_size):
  train: video float32 (B, T, S, S, 3) (with data.augment_on=device: uint8 frames on the canvas
         (B, T, Hc, Wc, 3) and their crop plans, `resample.crop_plan`), label int32 (B,),
         index int32 (B,) (the video read: its position in the source), skipped int32 (B / R,),
         errors str (B / R,)
  test:  video float32 (B, V, T, S, S, 3), label int32 (B,), index int32 (B,) (the video's
         position in the source: its `video_id` is source[index].video_id), valid bool (B,),
         skipped int32 (B,), errors str (B,)
"""

import dataclasses
import logging

import grain
import numpy as np
from absl import flags

from vmp_jax.data import (
    batch_memory,
    frame_store,
    randaugment,
    resample,
    sampling,
    sources,
    transforms,
    workers,
)
from vmp_jax.data.decode import DecodeError

log = logging.getLogger(__name__)


class NoReadableVideos(RuntimeError):
    """Raised when every file a pipeline tried has failed."""


_warned: set[str] = set()  # files already warned about in this process


def warn_unreadable(error: DecodeError) -> None:
    """Logs an unreadable file the first time this process meets it."""
    if error.name not in _warned:
        _warned.add(error.name)
        log.warning("skipping unreadable video: %s", error)


# Where training clips are cropped, flipped, RandAugmented, normalised and erased: in the loader
# (float32 batches) or in the train step (uint8 canvases; vmp_jax.data.device_augment).
AUGMENT_ON = ("host", "device")


@dataclasses.dataclass(frozen=True)
class ClipSettings:
    """What makes one clip out of a video, taken from the config's `data` and `eval` sections."""

    num_frames: int
    img_size: int
    sampling: str
    sampling_rate: int
    crop: str
    crop_scale: tuple[float, float]
    flip: bool
    randaug_n: int
    randaug_m: float
    randaug_mstd: float
    erase_prob: float
    short_side: int
    repeated_aug: int
    augment_on: str
    canvas: tuple[int, int]
    num_clips: int
    num_crops: int
    num_classes: int

    @classmethod
    def from_config(cls, config, source=None) -> "ClipSettings":
        """The settings of `config`; `source` sizes the canvas when data.canvas is None."""
        d = config.data
        fields = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        settings = cls(
            **fields | {"canvas": resample.canvas_of(d, source)},
            num_clips=config.eval.num_clips,
            num_crops=config.eval.num_crops,
            num_classes=config.model.num_classes,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        sampling.check_sampling(self.sampling)
        if self.crop not in transforms.CROPS:
            raise ValueError(f"data.crop must be one of {transforms.CROPS}, got {self.crop!r}")
        if self.short_side < self.img_size:
            raise ValueError(
                f"data.short_side ({self.short_side}) must be >= data.img_size ({self.img_size})"
            )
        if len(self.canvas) != 2 or min(self.canvas) < self.img_size:
            raise ValueError(
                f"data.canvas must be (height, width), each >= data.img_size ({self.img_size}), "
                f"got {tuple(self.canvas)}"
            )
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(
                f"data.augment_on must be one of {AUGMENT_ON}, got {self.augment_on!r}"
            )
        if self.repeated_aug < 1 or self.num_clips < 1:
            raise ValueError("data.repeated_aug and eval.num_clips must be at least 1")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"data.crop_scale must satisfy 0 < min <= max <= 1, got {lo, hi}")


def check_label(item, s: ClipSettings) -> None:
    """A label outside the model's classes is a config/data mismatch: an error, not a skip."""
    if not 0 <= item.label < s.num_classes:
        raise ValueError(
            f"{item.name}: label {item.label} is outside 0..{s.num_classes - 1} "
            f"(model.num_classes = {s.num_classes})"
        )


def train_plan(s: ClipSettings, rng):
    """The frame indices of `repeated_aug` random training clips, as a plan: num_frames ->
    int (R * T,)."""

    def plan(n: int) -> np.ndarray:
        draws = [
            sampling.train_indices(s.sampling, n, s.num_frames, s.sampling_rate, rng)
            for _ in range(s.repeated_aug)
        ]
        return np.concatenate(draws)

    return plan


def crop_box(h: int, w: int, s: ClipSettings, rng) -> transforms.Box:
    """The random (resized or multi-scale) crop's box in an h x w frame."""
    if s.crop == "random_resized":
        return transforms.random_resized_box(h, w, rng, scale=s.crop_scale)
    return transforms.multi_scale_box(h, w, rng)


def crop_clip(clip: np.ndarray, s: ClipSettings, rng) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, S, S, 3): the random crop, resized."""
    return transforms.crop_resize(clip, crop_box(*clip.shape[1:3], s, rng), s.img_size)


def on_canvas(
    frames: np.ndarray, canvas: tuple[int, int], into=None
) -> tuple[np.ndarray, int, int]:
    """uint8 (K, H, W, 3) -> (frames on the canvas (K, Hc, Wc, 3), zero-padded at the bottom
    and right; their height and width there), written into `into` if given. Frames larger
    than the canvas are resized down to fit it first (aspect kept)."""
    _, h, w, _ = frames.shape
    if h > canvas[0] or w > canvas[1]:
        scale = min(canvas[0] / h, canvas[1] / w)
        fitted = (max(1, min(canvas[0], int(h * scale))), max(1, min(canvas[1], int(w * scale))))
        frames = transforms.crop_resize(frames, (0, 0, h, w), fitted)
        h, w = fitted
    placed = frame_store.blank_canvas((len(frames), *canvas, 3), h, w, into)
    placed[:, :h, :w] = frames
    return placed, h, w


def frames_on_canvas(item, plan, canvas: tuple[int, int], into=None) -> tuple[np.ndarray, int, int]:
    """`on_canvas(item.read(plan), canvas, into)`; a frame store's frames that fit the canvas
    are decoded straight onto it (`StoredVideo.read_onto`)."""
    stored = isinstance(item, frame_store.StoredVideo)
    if stored and item.height <= canvas[0] and item.width <= canvas[1]:
        return item.read_onto(plan, canvas, into=into), item.height, item.width
    return on_canvas(item.read(plan), canvas, into)


def read_for_short_side(item, plan, short_side: int) -> np.ndarray:
    """`item.read(plan)` for frames about to be resized to `short_side`: a frame store's are
    decoded at a reduced size where that keeps their short side at least `short_side`."""
    if isinstance(item, frame_store.StoredVideo):
        return item.read(plan, short_side=short_side)
    return item.read(plan)


def augment_clip(clip: np.ndarray, s: ClipSettings, rng) -> np.ndarray:
    """uint8 (T, S, S, 3) -> float32 (T, S, S, 3): flip, RandAugment, normalisation, erasing."""
    if s.flip and rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    clip = randaugment.rand_augment(clip, s.randaug_n, s.randaug_m, s.randaug_mstd, rng)
    return transforms.random_erase(transforms.normalize(clip), s.erase_prob, rng)


def clips_shape(s: ClipSettings, clips: int) -> tuple[tuple[int, ...], type]:
    """(shape, dtype) of `train_clip`'s "video" for `clips` clips: float32 (clips, T, S, S, 3),
    or with data.augment_on=device uint8 (clips, T, Hc, Wc, 3)."""
    if s.augment_on == "host":
        return (clips, s.num_frames, s.img_size, s.img_size, 3), np.float32
    return (clips, s.num_frames, *s.canvas, 3), np.uint8


def train_clip(item, s: ClipSettings, rng, into=None) -> dict[str, np.ndarray]:
    """One decoded video -> `repeated_aug` clips of it: {"video": float32 (R, T, S, S, 3)}
    augmented; with data.augment_on=device, {"video": uint8 (R, T, Hc, Wc, 3)} (the frames on
    the canvas) and each clip's crop plan (`resample.crop_plan`, arrays (R, ...)), for the
    train step to crop, resize and augment. into: a C-contiguous array of `clips_shape(s, R)`
    (the video's slot of the batch) that "video" is written into (a frame store's frames
    decoded straight into it), instead of a new one."""
    plan = train_plan(s, rng)
    if s.augment_on == "host":
        clips = np.split(item.read(plan), s.repeated_aug)  # (T, H, W, 3) each
        augmented = [augment_clip(crop_clip(c, s, rng), s, rng) for c in clips]
        return {"video": np.stack(augmented, out=into)}
    frames = None if into is None else np.reshape(into, (-1, *into.shape[2:]), copy=False)
    placed, h, w = frames_on_canvas(item, plan, s.canvas, frames)  # (R * T, Hc, Wc, 3)
    boxes = [crop_box(h, w, s, rng) for _ in range(s.repeated_aug)]
    plans = [resample.crop_plan(box, s.img_size, s.canvas) for box in boxes]
    stacked = {k: np.stack([p[k] for p in plans]) for k in resample.PLAN_KEYS}
    return {"video": placed.reshape(s.repeated_aug, -1, *s.canvas, 3)} | stacked


def test_views(item, s: ClipSettings) -> np.ndarray:
    """One decoded video -> float32 (clips * crops, T, S, S, 3), clip-major: the short side
    resized to `short_side`, then 1 or 3 crops of `img_size` along the long side."""

    def plan(n: int) -> np.ndarray:
        return np.concatenate(
            [
                sampling.test_indices(s.sampling, n, s.num_frames, s.sampling_rate, c, s.num_clips)
                for c in range(s.num_clips)
            ]
        )

    frames = transforms.resize_short_side(
        read_for_short_side(item, plan, s.short_side), s.short_side
    )
    views = [
        transforms.eval_crops(c, s.img_size, s.num_crops) for c in np.split(frames, s.num_clips)
    ]
    return transforms.normalize(np.concatenate(views))


@dataclasses.dataclass(frozen=True)
class LoadTrain:
    """An index of the source and its element's random stream -> a training example (its
    "video" written into `into` if given, `train_clip`), replacing unreadable videos with
    others drawn from the element's own random stream."""

    source: object
    settings: ClipSettings

    def __call__(self, index: int, rng: np.random.Generator, into=None) -> dict:
        n = len(self.source)
        errors, candidate = [], index % n
        start = int(rng.integers(n))
        for attempt in range(n):
            item = self.source[candidate]
            check_label(item, self.settings)
            try:
                clips = train_clip(item, self.settings, rng, into)  # video (R, ...) [, plan]
            except DecodeError as e:
                warn_unreadable(e)
                errors.append(str(e))
                candidate = (start + attempt) % n
                continue
            return clips | {
                "label": np.full(len(clips["video"]), item.label, np.int32),
                "index": np.int32(candidate),
                "skipped": np.int32(len(errors)),
                "errors": "\n".join(errors),
            }
        raise NoReadableVideos(
            f"none of the {n} videos could be read; first errors:\n" + "\n".join(errors[:5])
        )


@dataclasses.dataclass(frozen=True)
class LoadTest:
    """Grain map: a padded index -> all views of one video (or an invalid padding element)."""

    source: object
    settings: ClipSettings

    def __call__(self, index: int) -> dict:
        s = self.settings
        views = s.num_clips * s.num_crops
        empty = np.zeros((views, s.num_frames, s.img_size, s.img_size, 3), np.float32)
        example = {"video": empty, "label": np.int32(-1), "index": np.int32(-1)}
        example |= {"valid": False, "skipped": np.int32(0), "errors": ""}
        if index >= len(self.source):
            return example  # padding
        item = self.source[index]
        check_label(item, s)
        example |= {"label": np.int32(item.label), "index": np.int32(index)}
        try:
            return example | {"video": test_views(item, s), "valid": True}
        except DecodeError as e:
            warn_unreadable(e)
            return example | {"skipped": np.int32(1), "errors": str(e)}


def random_state(index: int, rng: np.random.Generator) -> tuple[int, dict]:
    """Grain random map: an index of the source -> (it, its element's random stream as a state
    that `LoadBatch` continues; the stream itself goes back to Grain's pool)."""
    return index, rng.bit_generator.state


def continued(state: dict) -> np.random.Generator:
    """The random stream whose state `random_state` took."""
    rng = np.random.Generator(np.random.Philox(0))
    rng.bit_generator.state = state
    return rng


PLANS = frozenset(resample.PLAN_KEYS)


@dataclasses.dataclass(frozen=True)
class LoadBatch:
    """Grain batch function: v elements of `random_state` -> a batch of their v R clips, each
    video's written straight into its slot of one batch array (no per-video arrays stacked,
    no copy to hand the batch over: `batch_memory`; from a worker the batch's other arrays
    travel in the same slot). Bit for bit the batch of `LoadTrain` over the same elements,
    stacked: video and crop plans (v R, ...), label (v R,), index (v R,), skipped and errors
    (v,)."""

    load: LoadTrain
    memory: batch_memory.Slots

    def __call__(self, elements: list[tuple[int, dict]]) -> dict:
        s, repeats = self.load.settings, self.load.settings.repeated_aug
        video, handed = self.memory.take(*clips_shape(s, len(elements) * repeats))
        examples = [
            self.load(index, continued(state), into=video[k * repeats : (k + 1) * repeats])
            for k, (index, state) in enumerate(elements)
        ]
        plans = {k: np.concatenate([e[k] for e in examples]) for k in examples[0] if k in PLANS}
        batch = {
            "video": handed,
            **plans,
            "label": np.concatenate([e["label"] for e in examples]),
            "index": np.repeat(np.array([e["index"] for e in examples]), repeats),
            "skipped": np.array([e["skipped"] for e in examples]),
            "errors": np.array([e["errors"] for e in examples]),
        }
        return self.memory.pack(batch)  # from a worker: the other arrays in the video's slot


def per_host_batch(batch_size: int, what: str, divisor: int = 1, hosts: int | None = None) -> int:
    """This host's share of a global batch; an error names `what` when it does not split evenly
    over the hosts (times `divisor`)."""
    hosts = grain_shard()[1] if hosts is None else hosts
    if batch_size % (hosts * divisor):
        raise ValueError(
            f"{what} ({batch_size}) must be divisible by the number of hosts ({hosts})"
            + (f" x data.repeated_aug ({divisor})" if divisor > 1 else "")
        )
    return batch_size // hosts


def grain_shard() -> tuple[int, int]:
    """(this host's index, number of hosts) from JAX's process layout."""
    import jax

    return jax.process_index(), jax.process_count()


def _to_iter(ds: grain.MapDataset, data) -> grain.IterDataset:
    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; we are not an absl app
        flags.FLAGS.mark_as_parsed()
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads, prefetch_buffer_size=2))
    if data.num_workers > 0:
        options = grain.MultiprocessingOptions(num_workers=data.num_workers)
        it = it.mp_prefetch(options, worker_init_fn=workers.init_fn())  # SIGTERM ignored
        it = it.map(batch_memory.Attach())  # the workers' batches, in their shared memory
        it = workers.SignalsHeld(it)  # ... from a worker's first instruction on
    return it


def train_dataset(config, source=None) -> grain.IterDataset:
    """An endless stream of this host's share of each global training batch.

    The order is global, so that it does not depend on the number of hosts: the whole list is
    shuffled once per epoch (seeded) and the epochs are read as one stream, each element
    augmented from a random stream seeded by its position. Global batch i is the stream's
    positions [i G, (i + 1) G) (G videos a step); host h of H reads the h-th of its H equal
    parts. So the hosts' batches, concatenated in host order, hold the same videos with the
    same augmentation whatever H is, and each video of an epoch is read once, by one host.
    """
    source = sources.open_source(config.data, "train") if source is None else source
    s = ClipSettings.from_config(config, source)
    host, hosts = grain_shard()
    per_host = per_host_batch(config.data.batch_size, "data.batch_size", s.repeated_aug, hosts)
    stream = grain.MapDataset.range(len(source)).shuffle(seed=config.seed).repeat()
    stream = stream.random_map(random_state, seed=config.seed)  # seeded by position
    memory = batch_memory.Slots(shared=config.data.num_workers > 0)  # reused batch arrays
    load = LoadBatch(LoadTrain(source, s), memory)
    shares = stream.batch(per_host // s.repeated_aug, batch_fn=load)  # positions [j v, (j+1) v)
    return _to_iter(shares[host::hosts], config.data)


def test_dataset(config, source=None) -> grain.IterDataset:
    """One pass over this host's share of the validation videos, all views of each."""
    s = ClipSettings.from_config(config)
    source = sources.open_source(config.data, "val") if source is None else source
    per_host = per_host_batch(config.eval.batch_size, "eval.batch_size")
    host, hosts = grain_shard()
    step = per_host * hosts
    padded = -(-len(source) // step) * step
    ds = grain.MapDataset.range(padded)[host::hosts].map(LoadTest(source, s))
    return _to_iter(ds.batch(per_host, drop_remainder=True), config.data)


def steps_per_epoch(config, num_videos: int) -> int:
    """Training steps in one pass over `num_videos` videos at the global batch size."""
    videos_per_step = config.data.batch_size // config.data.repeated_aug
    return max(1, num_videos // videos_per_step)
