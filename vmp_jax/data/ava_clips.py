"""AVA clips and boxes: the input side of spatio-temporal action detection (SPEC section 8).

A keyframe is a (video_id, timestamp) of AVA's 15-minute cuts: the video file starts at second
`cut_start` (900), so second t is 0-based frame (t - 900) x fps (fps = 30, AVA's convention). A
clip is `num_frames` T frames at stride `frame_stride` r around it, the keyframe being the clip's
frame T // 2:

    indices = clamp(centre + r (i - T // 2), 0, frames - 1),  i = 0 .. T - 1

(for even T, SlowFast's `get_sequence`), the same rule in training and evaluation (`clip_indices`).
Frames are read through the project's decoder (keyframe seek, exact frames) or a frame store
(`vmp make-frames` of the split's video list: each video's frames stored once, whatever number
of keyframes read them).

Boxes come per keyframe (`KeyframeBoxes`: normalised x1, y1, x2, y2 as AVA's files give them,
an 80-column multi-hot of action ids (id i -> column i - 1), a person score): ground truth for
training, jittered by up to `box_jitter` of each side; for evaluation the person detections at
or above `score_threshold` (0.8), a keyframe's top box always kept (`select_detections`), or the
ground truth (score 1). They are padded to the static `max_boxes` K with a mask; keyframes
with more boxes are a configuration error that says how many, the largest count and a few of
them. A keyframe without a box (a 2-column row of the file) is not a clip.

Spatial transform (`Placement`): evaluation resizes the whole frame to fit `test_size` (H, W)
(aspect kept, centred, zero padding: no box is cut); training scales it to that size times a
random factor in `train_scale` (1 - 1.25: with test_size 256 x 455 and a 16:9 video, a short
side of 256 - 320, SlowFast's jitter), takes a random `img_size` square (padded where the frame
is smaller) and flips half the clips. Boxes move with the pixels, clipped to the crop; training
drops boxes left with less than 1 px of width or height.

A batch (B keyframes, K = max_boxes, T frames; S = img_size in training, test_size in evaluation):

    video          float32 (B, T, S_h, S_w, 3) normalised as the classification pipeline
                   (`transforms.normalize`); uint8 with normalize=False
    boxes          float32 (B, K, 4)  x1, y1, x2, y2 in the clip's input pixels (0 where masked)
    box_mask       bool    (B, K)     the real boxes
    labels         float32 (B, K, 80) multi-hot, action id i -> column i - 1 (0 for detections)
    person_scores  float32 (B, K)     the detector's score (1 for ground truth)
    source_boxes   float32 (B, K, 4)  the boxes as the files give them (normalised to the frame):
                                      what a detections CSV writes back
    keyframe       int32   (B,)       the keyframe's position in `AvaClips.keyframes`
                                      (-1: padding), whose video_id and timestamp it holds
    valid          bool    (B,)       False for padding and unreadable clips (evaluation)
    skipped        int32   (B,)       reads that failed for this element

Bad input: a video that is missing, unreadable, at another frame rate, or a keyframe outside
its video is reported once (the video id and why), its keyframes are left out, and
`AvaClips.summary()` counts them; a clip whose frames then fail to decode is replaced by another
keyframe in training and marked invalid in evaluation, as the classification pipeline does.
"""

import dataclasses
import logging
import os

import grain
import numpy as np

from vmp_jax import storage
from vmp_jax.data import decode, frame_store, listing, transforms

log = logging.getLogger(__name__)

CUT_START = 900  # AVA's cuts start at second 900 (their frame 0)
AVA_FPS = 30  # AVA's timestamp convention
NUM_CLASSES = 80  # AVA's action ids 1..80


class KeyframeOutsideVideo(ValueError):
    """A keyframe whose frame lies outside its video."""


def keyframe_frame(timestamp: float, fps: float = AVA_FPS, cut_start: float = CUT_START) -> int:
    """The 0-based frame of second `timestamp` in a cut that starts at second `cut_start`."""
    return int(round((timestamp - cut_start) * fps))


def clip_indices(
    timestamp: float,
    num_frames: int,
    frame_stride: int,
    video_frames: int,
    *,
    fps: float = AVA_FPS,
    cut_start: float = CUT_START,
) -> np.ndarray:
    """int64 (num_frames,): the clip around a keyframe, clamped to the video's frames
    0 .. video_frames - 1; the keyframe is the clip's frame num_frames // 2.
    KeyframeOutsideVideo when the keyframe itself is not a frame of the video."""
    if num_frames < 1 or frame_stride < 1:
        raise ValueError(
            f"num_frames and frame_stride must be >= 1, got {num_frames}, {frame_stride}"
        )
    centre = keyframe_frame(timestamp, fps, cut_start)
    if not 0 <= centre < video_frames:
        raise KeyframeOutsideVideo(
            f"keyframe {timestamp} is frame {centre} (second {cut_start} is frame 0, {fps:g} fps), "
            f"outside the video's {video_frames} frames"
        )
    offsets = frame_stride * (np.arange(num_frames) - num_frames // 2)
    return np.clip(centre + offsets, 0, video_frames - 1)


@dataclasses.dataclass(frozen=True)
class KeyframeBoxes:
    """One keyframe's boxes: N persons."""

    video_id: str
    timestamp: int
    boxes: np.ndarray  # float32 (N, 4) normalised x1, y1, x2, y2
    labels: np.ndarray  # float32 (N, 80) multi-hot (zeros for detections)
    scores: np.ndarray  # float32 (N,) person scores (1 for ground truth)

    @classmethod
    def of(cls, video_id, timestamp, boxes, actions=None, scores=None, num_classes=NUM_CLASSES):
        """From boxes (N, 4), each box's action ids (lists, or None) and scores (or None: 1)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.zeros((len(boxes), num_classes), np.float32)
        for row, ids in enumerate(actions or []):
            for action in ids:
                if not 1 <= action <= num_classes:
                    raise ValueError(
                        f"{video_id},{timestamp}: action id {action} outside 1..{num_classes}"
                    )
                labels[row, action - 1] = 1
        scores = np.ones(len(boxes), np.float32) if scores is None else scores
        return cls(video_id, int(timestamp), boxes, labels, np.asarray(scores, np.float32))

    @property
    def key(self) -> tuple[str, int]:
        return self.video_id, self.timestamp


def select_detections(scores: np.ndarray, threshold: float) -> np.ndarray:
    """int (M,): the boxes scored at or above `threshold`, highest first; the top box always
    (a keyframe is never left without a box)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if not len(order):
        return order
    kept = order[np.asarray(scores)[order] >= threshold]
    return kept if len(kept) else order[:1]


def jitter_boxes(boxes: np.ndarray, amount: float, rng) -> np.ndarray:
    """float32 (N, 4) normalised boxes with each side moved by up to `amount` of the box's
    width (x) or height (y), within [0, 1] and at least 1e-3 wide and high."""
    if amount <= 0 or not len(boxes):
        return boxes
    sides = np.tile(boxes[:, 2:] - boxes[:, :2], 2)  # (N, 4) w, h, w, h
    moved = boxes + rng.uniform(-amount, amount, boxes.shape) * sides
    moved = np.clip(moved, 0, 1)
    moved[:, 2:] = np.maximum(moved[:, 2:], np.minimum(moved[:, :2] + 1e-3, 1))
    moved[:, :2] = np.minimum(moved[:, :2], moved[:, 2:] - 1e-3)
    return moved.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a frame lands in the clip's input: resized to `resized` (h', w'), its top-left
    corner at `offset` (top, left: negative crops, positive pads), in an output of `size`
    (H, W), mirrored left-right if `flip`. Frames (`place_frames`) and boxes (`place_boxes`)
    go through the same map: x -> x w' / w + left (then W - x if flipped)."""

    resized: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    flip: bool = False


def eval_placement(h: int, w: int, size: tuple[int, int]) -> Placement:
    """The whole frame fitted into `size`, aspect kept, centred."""
    scale = min(size[0] / h, size[1] / w)
    resized = (max(1, round(h * scale)), max(1, round(w * scale)))
    return Placement(resized, ((size[0] - resized[0]) // 2, (size[1] - resized[1]) // 2), size)


def train_placement(
    h: int, w: int, test_size: tuple[int, int], crop: int, scale: tuple[float, float], flip, rng
) -> Placement:
    """The frame at the evaluation's scale times a random factor in `scale`, a random
    `crop` x `crop` window of it (padded where the frame is smaller), flipped with
    probability 1/2 if `flip`."""
    base = min(test_size[0] / h, test_size[1] / w) * rng.uniform(*scale)
    resized = (max(1, round(h * base)), max(1, round(w * base)))
    offset = tuple(int(rng.integers(min(0, crop - n), max(0, crop - n) + 1)) for n in resized)
    return Placement(resized, offset, (crop, crop), bool(flip and rng.random() < 0.5))


def place_frames(frames: np.ndarray, p: Placement) -> np.ndarray:
    """uint8 (T, h, w, 3) -> uint8 (T, H, W, 3) by `p`."""
    t, h, w, _ = frames.shape
    resized = transforms.crop_resize(frames, (0, 0, h, w), p.resized)  # (T, h', w', 3)
    out = np.zeros((t, *p.size, 3), np.uint8)
    (top, left), (rh, rw) = p.offset, p.resized
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(p.size[0], top + rh), min(p.size[1], left + rw)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = resized[:, y0 - top : y1 - top, x0 - left : x1 - left]
    return out[:, :, ::-1] if p.flip else out


def place_boxes(boxes: np.ndarray, h: int, w: int, p: Placement) -> np.ndarray:
    """float32 (N, 4) normalised boxes of an h x w frame -> input pixels of `p`'s output,
    clipped to it."""
    rh, rw = p.resized
    top, left = p.offset
    out = boxes * np.array([rw, rh, rw, rh], np.float32) + np.array([left, top, left, top])
    out = np.clip(out, 0, np.array([p.size[1], p.size[0]] * 2, np.float32))
    if p.flip:
        out = np.stack([p.size[1] - out[:, 2], out[:, 1], p.size[1] - out[:, 0], out[:, 3]], -1)
    return out.astype(np.float32).reshape(-1, 4)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """What makes a clip and its boxes out of a keyframe."""

    num_frames: int = 16
    frame_stride: int = 4
    img_size: int = 224  # the training crop
    test_size: tuple[int, int] | None = None  # (H, W) of evaluation clips; None: img_size^2
    train_scale: tuple[float, float] = (1.0, 1.25)
    flip: bool = True
    max_boxes: int = 16
    num_classes: int = NUM_CLASSES
    box_jitter: float = 0.05
    score_threshold: float = 0.8
    fps: float = AVA_FPS
    cut_start: float = CUT_START
    normalize: bool = True

    @property
    def eval_size(self) -> tuple[int, int]:
        return tuple(self.test_size) if self.test_size else (self.img_size, self.img_size)


# AVA's files under AVA's names in a dataset root (`vmp make-synthetic --kind ava` writes them).
LABEL_MAP = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"


def ground_truth_name(split: str) -> str:
    return f"ava_{split}_v2.2.csv"


def excluded_name(split: str) -> str:
    return f"ava_{split}_excluded_timestamps_v2.2.csv"


def detections_name(split: str) -> str:
    return f"ava_{split}_predicted_boxes.csv"


PICKLE_EXTENSIONS = (".pkl", ".pickle")


def read_person_boxes(path: str):
    """The person detections at `path` (local or a bucket), by its extension: MMAction2's
    dense-proposals pickle (.pkl, .pickle: `"video_id,0902" -> [[x1, y1, x2, y2, score],
    ...]`) or SlowFast's predicted-boxes CSV (any other name); {key: PersonBoxes} either way."""
    from vmp_jax.data import ava

    if os.path.splitext(path)[1].lower() in PICKLE_EXTENSIONS:
        return ava.read_proposals_pickle(path)
    return ava.read_detections(path)


def keyframes_of(found: dict, excluded=(), num_classes: int = NUM_CLASSES) -> list[KeyframeBoxes]:
    """`vmp_jax.data.ava`'s {(video_id, timestamp): GroundTruthBoxes or PersonBoxes} as
    KeyframeBoxes in key order, the excluded keyframes left out: ground truth with score 1,
    detections with no labels. A keyframe without a box (a 2-column row `video_id,timestamp`
    of the file: labelled, nobody in it or nobody detected) is left out too: no person to
    train on or to score; the metric still counts it, from the ground-truth file."""
    excluded = set(excluded)
    result = []
    for (video_id, timestamp), value in sorted(found.items()):
        n = len(value.boxes)
        if (video_id, timestamp) in excluded or not n:
            continue
        labels = getattr(value, "labels", None)
        labels = np.zeros((n, num_classes), np.float32) if labels is None else labels
        scores = getattr(value, "scores", None)
        scores = np.ones(n, np.float32) if scores is None else scores
        result.append(KeyframeBoxes(video_id, int(timestamp), value.boxes, labels, scores))
    return result


def open_split(
    root: str, split: str, config: "ClipConfig", *, train: bool, boxes: str = "detected",
    videos: str | None = None, detections: str | None = None,
) -> "AvaClips":  # fmt: skip
    """The clips of `split` ("train", "val") of a dataset laid out as AVA's release under
    `root`: ground truth `ava_<split>_v2.2.csv`, `ava_<split>_excluded_timestamps_v2.2.csv`
    (if present), detections `ava_<split>_predicted_boxes.csv` (or `detections`: another CSV
    or a proposals pickle, `read_person_boxes`), videos in `root/videos` (or `videos`: another
    folder or a frame store). Training reads the ground truth; evaluation the detections
    (boxes="detected") or the ground truth (boxes="gt").

    NoKeyframesError, naming the split, the boxes' file and the videos' folder, when not one
    keyframe can be read (a wrong folder or store, or a file of other videos): a run would
    train or score on nothing."""
    from vmp_jax.data import ava

    if boxes not in ("detected", "gt"):
        raise ValueError(f"boxes must be 'detected' or 'gt', got {boxes!r}")
    excluded_path = storage.join(root, excluded_name(split))
    excluded = ava.read_excluded(excluded_path) if storage.exists(excluded_path) else set()
    if train or boxes == "gt":
        path = storage.join(root, ground_truth_name(split))
        found = ava.read_ground_truth(path)
    else:
        path = detections or storage.join(root, detections_name(split))
        found = read_person_boxes(path)
    if found.problems:
        log.warning("%s: %s", split, found.problems.summary())
    keyframes = keyframes_of(found, excluded, config.num_classes)
    where = videos or storage.join(root, "videos")
    clips = AvaClips.open(keyframes, find_videos(where), config, train=train)
    if not len(clips):
        raise NoKeyframesError(split, path, where, clips)
    return clips


class NoKeyframesError(ValueError):
    """A split of which not one keyframe can be read."""

    def __init__(self, split: str, path: str, videos: str, clips: "AvaClips"):
        reasons = "; ".join(f"{v}: {why}" for v, why in list(clips.problems.items())[:3])
        more = ", ..." if len(clips.problems) > 3 else ""
        super().__init__(
            f"AVA {split}: no keyframe of {path} can be read from the videos in {videos} "
            f"({clips.summary()}{'; ' + reasons + more if reasons else ''}): check "
            f"data.data_root and ava.videos (one folder or frame store holding every video of "
            f"both splits)"
        )


# A video on disk or in a bucket, or a frame store's video: anything with read(plan).
Video = listing.VideoFile | frame_store.StoredVideo


def find_videos(where: str) -> dict[str, Video]:
    """{video_id: video} of a directory of `<video_id>.<ext>` files (AVA's cuts, local or in a
    bucket) or of a frame store (`vmp make-frames` of a `videos/<video_id>.mp4 0` list): a
    stored video's id is its listed path's stem."""
    if storage.isfile(storage.join(where, frame_store.STORE_FILE)):
        store = frame_store.open_store(where)
        return {_stem(v.video_id): v for v in store.videos}
    found = {}
    for name in sorted(storage.listdir(where)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in listing.VIDEO_EXTENSIONS:
            found[stem] = listing.VideoFile(storage.join(where, name), 0, stem)
    return found


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _frame_count(video: Video, fps: float) -> int:
    """The video's frames; DecodeError when unreadable, ValueError at another frame rate."""
    if isinstance(video, frame_store.StoredVideo):
        return video.num_frames
    info = decode.probe(video.path)
    if abs(info.fps - fps) > 1e-3 * fps:
        raise ValueError(
            f"{info.fps:g} fps, not the clips' {fps:g} (AVA's timestamps need the cut at "
            f"{fps:g} fps: re-extract it, docs/detection.md)"
        )
    return info.num_frames


@dataclasses.dataclass
class AvaClips:
    """The keyframes that can be read, their videos, and what was left out and why.

    `open` checks every video once (found, readable, its frame rate, every keyframe inside it)
    and every keyframe's box count against `max_boxes` before any clip is read."""

    keyframes: list[KeyframeBoxes]
    videos: dict[str, Video]
    frames: dict[str, int]  # video_id -> its frame count
    config: ClipConfig
    train: bool
    problems: dict[str, str]  # video_id -> why its keyframes were (some or all) left out
    left_out: int  # keyframes left out

    @classmethod
    def open(cls, keyframes, videos: dict[str, Video], config: ClipConfig, *, train: bool):
        kept, problems, frames, left_out = [], {}, {}, 0
        for kf in keyframes:
            if kf.video_id not in frames and kf.video_id not in problems:
                try:
                    if kf.video_id not in videos:
                        raise decode.DecodeError(kf.video_id, "missing file")
                    frames[kf.video_id] = _frame_count(videos[kf.video_id], config.fps)
                except (decode.DecodeError, ValueError) as e:
                    problems[kf.video_id] = str(e)
            if kf.video_id in problems and kf.video_id not in frames:
                left_out += 1
                continue
            try:
                clip_indices(kf.timestamp, 1, 1, frames[kf.video_id], fps=config.fps,
                             cut_start=config.cut_start)  # fmt: skip
            except KeyframeOutsideVideo as e:
                problems.setdefault(kf.video_id, str(e))
                left_out += 1
                continue
            kept.append(kf)
        for video_id, why in problems.items():
            log.warning("AVA video %s: %s; its keyframes left out", video_id, why)
        _check_box_counts(kept, config, train)
        return cls(kept, videos, frames, config, train, problems, left_out)

    def __len__(self) -> int:
        return len(self.keyframes)

    def summary(self) -> str:
        total = len(self.keyframes) + self.left_out
        return (
            f"{len(self.keyframes)} of {total} keyframes read; {self.left_out} left out "
            f"({len(self.problems)} videos missing, unreadable or too short)"
        )

    def boxes(self, kf: KeyframeBoxes, rng=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalised boxes (N, 4), labels (N, C), scores (N,)) this split uses: ground truth
        jittered in training, the detections kept by the threshold in evaluation."""
        if self.train:
            return jitter_boxes(kf.boxes, self.config.box_jitter, rng), kf.labels, kf.scores
        kept = select_detections(kf.scores, self.config.score_threshold)
        return kf.boxes[kept], kf.labels[kept], kf.scores[kept]

    def clip(self, index: int, rng=None) -> dict[str, np.ndarray]:
        """One element of the batch layout (module docstring), without its batch axis."""
        c, kf = self.config, self.keyframes[index]
        n = self.frames[kf.video_id]
        plan = clip_indices(kf.timestamp, c.num_frames, c.frame_stride, n, fps=c.fps,
                            cut_start=c.cut_start)  # fmt: skip
        frames = self.videos[kf.video_id].read(plan)  # uint8 (T, h, w, 3)
        h, w = frames.shape[1:3]
        if self.train:
            p = train_placement(h, w, c.eval_size, c.img_size, c.train_scale, c.flip, rng)
        else:
            p = eval_placement(h, w, c.eval_size)
        video = place_frames(frames, p)
        source, labels, scores = self.boxes(kf, rng)
        pixels = place_boxes(source, h, w, p)
        if self.train:  # boxes cropped away
            keep = (pixels[:, 2] - pixels[:, 0] >= 1) & (pixels[:, 3] - pixels[:, 1] >= 1)
            source, labels, scores, pixels = source[keep], labels[keep], scores[keep], pixels[keep]
        return {
            "video": transforms.normalize(video) if c.normalize else video,
            **pad_boxes(pixels, source, labels, scores, c.max_boxes, kf),
            "keyframe": np.int32(index),
            "valid": True,
            "skipped": np.int32(0),
        }


def _check_box_counts(keyframes: list[KeyframeBoxes], config: ClipConfig, train: bool) -> None:
    """ValueError when any keyframe has more boxes than `max_boxes` (training: its ground
    truth; evaluation: the boxes kept at `score_threshold`), saying how many keyframes,
    the largest count and a few examples, largest first."""
    if train:
        counts = [len(kf.boxes) for kf in keyframes]
    else:
        counts = [len(select_detections(kf.scores, config.score_threshold)) for kf in keyframes]
    over = sorted(
        ((n, kf.video_id, kf.timestamp) for n, kf in zip(counts, keyframes, strict=True)
         if n > config.max_boxes),
        key=lambda o: -o[0],
    )  # fmt: skip
    if not over:
        return
    most = over[0][0]
    shown = ", ".join(f"{v},{t:04d} ({n})" for n, v, t in over[:5])
    boxes = (
        "ground-truth boxes" if train else f"evaluation boxes (score >= {config.score_threshold:g})"
    )
    raise ValueError(
        f"{len(over)} of {len(keyframes)} keyframes have more {boxes} than max_boxes="
        f"{config.max_boxes}, the static maximum per clip; the largest has {most} boxes "
        f"(e.g. {shown}{', ...' if len(over) > 5 else ''}): raise max_boxes to at least {most}"
    )


def pad_boxes(pixels, source, labels, scores, max_boxes: int, kf=None) -> dict[str, np.ndarray]:
    """N boxes -> the batch's box fields padded to `max_boxes` (K): boxes (K, 4), box_mask
    (K,), labels (K, C), person_scores (K,), source_boxes (K, 4)."""
    n = len(pixels)
    if n > max_boxes:
        where = f"keyframe {kf.video_id},{kf.timestamp:04d}" if kf is not None else "a clip"
        raise ValueError(f"{where} has {n} boxes, more than max_boxes={max_boxes}")
    pad = max_boxes - n

    def padded(a, dtype):
        a = np.asarray(a, dtype)
        return np.concatenate([a, np.zeros((pad, *a.shape[1:]), dtype)])

    return {
        "boxes": padded(np.reshape(pixels, (-1, 4)), np.float32),
        "box_mask": np.arange(max_boxes) < n,
        "labels": padded(labels, np.float32),
        "person_scores": padded(scores, np.float32),
        "source_boxes": padded(np.reshape(source, (-1, 4)), np.float32),
    }


def _empty(clips: AvaClips) -> dict[str, np.ndarray]:
    """An invalid element (evaluation padding or an unreadable clip)."""
    c = clips.config
    size = c.eval_size
    video = np.zeros((c.num_frames, *size, 3), np.float32 if c.normalize else np.uint8)
    boxes = pad_boxes(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, c.num_classes)),
                      np.zeros(0), c.max_boxes)  # fmt: skip
    return {"video": video, **boxes, "keyframe": np.int32(-1), "valid": False,
            "skipped": np.int32(0)}  # fmt: skip


_warned: set[str] = set()


def _warn(error: decode.DecodeError) -> None:
    if error.name not in _warned:
        _warned.add(error.name)
        log.warning("skipping unreadable AVA clip: %s", error)


@dataclasses.dataclass(frozen=True)
class LoadTrain:
    """Grain random map: a keyframe's position -> a training element; a clip that fails to
    decode is replaced by another keyframe drawn from the element's own random stream."""

    clips: AvaClips

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        n = len(self.clips)
        candidate, errors = index % n, 0
        for _ in range(n):
            try:
                return self.clips.clip(candidate, rng) | {"skipped": np.int32(errors)}
            except decode.DecodeError as e:
                _warn(e)
                errors += 1
                candidate = int(rng.integers(n))
        raise RuntimeError(f"no AVA clip could be read in {n} tries")


@dataclasses.dataclass(frozen=True)
class LoadEval:
    """Grain map: a padded position -> an evaluation element (invalid past the end or when
    the clip cannot be decoded)."""

    clips: AvaClips

    def __call__(self, index: int) -> dict:
        if index >= len(self.clips):
            return _empty(self.clips)
        try:
            return self.clips.clip(index)
        except decode.DecodeError as e:
            _warn(e)
            return _empty(self.clips) | {"keyframe": np.int32(index), "skipped": np.int32(1)}


def _iter(ds: grain.MapDataset, num_threads: int, num_workers: int) -> grain.IterDataset:
    from absl import flags

    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; we are not an absl app
        flags.FLAGS.mark_as_parsed()
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2))
    if num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


def train_dataset(
    clips: AvaClips, batch_size: int, seed: int, *, num_threads: int = 2, num_workers: int = 0,
    host: int = 0, hosts: int = 1,
) -> grain.IterDataset:  # fmt: skip
    """An endless stream of this host's share of each global batch of `batch_size` keyframes:
    shuffled per epoch (seeded), each element augmented from a stream seeded by its position
    (the same batches whatever the worker or host count)."""
    if batch_size % hosts:
        raise ValueError(f"batch size {batch_size} must be divisible by the hosts ({hosts})")
    stream = grain.MapDataset.range(len(clips)).shuffle(seed=seed).repeat()
    stream = stream.random_map(LoadTrain(clips), seed=seed)
    shares = stream.batch(batch_size // hosts)
    return _iter(shares[host::hosts], num_threads, num_workers)


def eval_dataset(
    clips: AvaClips, batch_size: int, *, num_threads: int = 2, num_workers: int = 0,
    host: int = 0, hosts: int = 1,
) -> grain.IterDataset:  # fmt: skip
    """One pass over the keyframes, each once over all hosts, padded with invalid elements so
    that every host runs the same number of batches of `batch_size // hosts`."""
    if batch_size % hosts:
        raise ValueError(f"batch size {batch_size} must be divisible by the hosts ({hosts})")
    per_host = batch_size // hosts
    padded = -(-len(clips) // batch_size) * batch_size
    ds = grain.MapDataset.range(padded)[host::hosts].map(LoadEval(clips))
    return _iter(ds.batch(per_host, drop_remainder=True), num_threads, num_workers)
