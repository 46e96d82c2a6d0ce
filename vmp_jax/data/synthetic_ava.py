"""The generated AVA-like dataset: real H.264 videos with moving actors and AVA's own files.

`vmp make-synthetic --kind ava --out DIR` writes, under AVA's names and in AVA's formats:

    DIR/videos/<video_id>.mp4                     the videos (H.264, `fps` frames a second)
    DIR/ava_train_v2.2.csv                        ground truth: video_id,timestamp,x1,y1,x2,y2,
    DIR/ava_val_v2.2.csv                            action_id,person_id (one row per box and action)
    DIR/ava_action_list_v2.2_for_activitynet_2019.pbtxt   the evaluated actions (official layout)
    DIR/ava_train_excluded_timestamps_v2.2.csv    video_id,timestamp of keyframes left out (no GT
    DIR/ava_val_excluded_timestamps_v2.2.csv        rows, as in AVA's release)
    DIR/ava_val_predicted_boxes.csv               person detections, SlowFast's format:
                                                    video_id,timestamp,x1,y1,x2,y2,,score
    DIR/train.txt, DIR/val.txt                    `videos/<video_id>.mp4 0` lists (for
                                                    `vmp make-frames`: a frame store of the split)
    DIR/synthetic_ava.json                        the settings (fps, size, seconds, actions, seed)

Timestamps follow AVA: a video file is the 15-minute cut that starts at second 900, so frame i
shows second 900 + i / fps, and the keyframe of second t is frame (t - 900) x fps (0-based).
Keyframes are the whole seconds 902 .. 900 + seconds - 2 (AVA: 902 .. 1798). The videos are
written at 30 fps by default, AVA's own convention, so the clip index rule is AVA's exactly with
nothing to convert; 160x120 px and 15 s keep a file near 150 kB (139-159 kB at the defaults).
(`--fps` writes another rate, recorded in synthetic_ava.json; the clips then need `fps` set to
it.)

Each video holds 2..`max_actors` actors, each in its own vertical band of the frame (they never
overlap). An actor does exactly one pose action (stand, sit or walk: AVA's pose classes are
exclusive) and any of three others (carry/hold, hand wave, talk to) at a time; its actions
change every 3-6 s, at half seconds, so a keyframe is never at a change. Every action is
visible in the actor's own box and nowhere else:

    stand 12   red body, tall          carry/hold (an object) 17   a yellow square at the side
    sit 11     green body, short       hand wave 69                a magenta arm, waving at 2 Hz
    walk 14    blue body, tall, moves  talk to 79                  a cyan head (else skin)

so a detector with a ROI head can learn them, and boxes shuffled between actors carry the
wrong actions. Backgrounds are the motion dataset's panning textures with two distractor blobs
(`vmp_jax.data.synthetic`), faded to 30% of their colour so that none looks like an action's.
A box is the bounding box of the actor's pixels at the keyframe, normalised by the frame's
width and height, written with AVA's 3 decimals.

Detections for the val videos imitate a person detector: every actor's box jittered (about 4%
of its size) with a score in 0.85..1 (one in twenty in 0.5..0.8), and low-scored false
positives (0.02..0.6) at random places, on every keyframe including the excluded ones.
Everything is a function of the seed.
"""

import dataclasses
import json
import os

import numpy as np

from vmp_jax.data import generated, synthetic
from vmp_jax.data.ava_clips import (
    CUT_START,
    LABEL_MAP,
    detections_name,
    excluded_name,
    ground_truth_name,
    keyframe_frame,
)

POSES = {12: "stand", 11: "sit", 14: "walk"}  # exactly one at a time
EXTRAS = {
    17: "carry/hold (an object)",
    69: "hand wave",
    79: "talk to (e.g., self, a person, a group)",
}  # any of them
ACTIONS = dict(sorted((POSES | EXTRAS).items()))  # AVA action id -> AVA's name

SETTINGS = "synthetic_ava.json"


_BODY = {12: (200, 40, 40), 11: (40, 170, 40), 14: (40, 70, 220)}
_SKIN, _TALK, _CARRY, _WAVE = (235, 195, 160), (40, 220, 220), (240, 220, 30), (220, 40, 220)
ACTION_COLOURS = {**_BODY, 79: _TALK, 17: _CARRY, 69: _WAVE}  # what marks each action
WALK_SPEED = 15  # px a second (at 120 px frame height)
EXTRA_PROB = 0.4
# The background's and distractors' colourfulness, kept: at full colour a greenish background
# came within 40 of the sit body's green on some videos.
BACKGROUND_CHROMA = 0.3


@dataclasses.dataclass(frozen=True)
class Spec:
    """What `make_dataset` writes."""

    out: str
    videos: int = 16
    seconds: int = 15
    height: int = 120
    width: int = 160
    fps: int = 30
    val_fraction: float = 0.25
    max_actors: int = 3
    seed: int = 0

    def validate(self) -> None:
        if self.height % 2 or self.width % 2 or self.height < 64 or self.width < 64:
            raise ValueError(f"--size must be even and at least 64, got {self.width}x{self.height}")
        if self.seconds < 5:
            raise ValueError(f"--seconds must be at least 5 (keyframes 902..), got {self.seconds}")
        if self.videos < 2:
            raise ValueError(f"--videos must be at least 2 (one train, one val), got {self.videos}")
        if not 2 <= self.max_actors <= self.width // 40:
            raise ValueError(
                f"max_actors must be in 2..{self.width // 40} for {self.width} px frames "
                f"(a band of 40 px each), got {self.max_actors}"
            )
        if self.fps < 1:
            raise ValueError(f"--fps must be at least 1, got {self.fps}")

    @property
    def keyframes(self) -> range:
        """The annotated seconds: 902 .. 900 + seconds - 2."""
        return range(CUT_START + 2, CUT_START + self.seconds - 1)

    @property
    def num_val(self) -> int:
        return min(self.videos - 1, max(1, int(round(self.videos * self.val_fraction))))


def video_ids(spec: Spec) -> list[str]:
    """`spec.videos` distinct YouTube-like ids (11 characters of [A-Za-z0-9_-]), from the seed."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2**31 - 1]))
    ids: list[str] = []
    while len(ids) < spec.videos:
        candidate = "".join(rng.choice(alphabet, 11))
        if candidate not in ids:
            ids.append(candidate)
    return ids


@dataclasses.dataclass
class Actor:
    """One actor's course over the video: per frame its foot point and actions."""

    band: tuple[float, float]  # its horizontal band (left, right) in px
    x: np.ndarray  # float (F,) foot point
    y: float
    pose: np.ndarray  # int (F,) the pose's action id
    extras: np.ndarray  # bool (F, 3) carry, wave, talk


def _unit(spec: Spec) -> float:
    return spec.height / 120


def plan_actor(spec: Spec, band: tuple[float, float], rng) -> Actor:
    """Random action segments (3-6 s, changing at half seconds) and a path in the band."""
    frames, u = spec.seconds * spec.fps, _unit(spec)
    pose, extras = np.zeros(frames, np.int64), np.zeros((frames, 3), bool)
    start = 0.0
    while start < spec.seconds:
        end = np.floor(start + rng.uniform(3, 6)) + 0.5
        lo, hi = int(round(start * spec.fps)), min(frames, int(round(end * spec.fps)))
        pose[lo:hi] = list(POSES)[rng.integers(len(POSES))]
        extras[lo:hi] = rng.random(3) < EXTRA_PROB
        start = end
    lo, hi = band[0] + 15 * u, band[1] - 18 * u  # room for the arm (left) and the object (right)
    home = rng.uniform(lo, hi)
    t = np.arange(frames) / spec.fps
    sway = np.sin(2 * np.pi * (0.5 * t + rng.uniform())) * u  # standing still, not quite
    span = max(hi - lo, 1e-6)
    walked = (home - lo + WALK_SPEED * u * t) % (2 * span)  # there and back
    walk_x = lo + np.where(walked < span, walked, 2 * span - walked)
    x = np.where(pose == 14, walk_x, home + sway)
    x = np.clip(x, lo, hi)
    return Actor(band, x, rng.uniform(50 * u, spec.height - 2), pose, extras)


def actor_parts(actor: Actor, frame: int, spec: Spec) -> list[tuple[tuple, tuple]]:
    """(colour, (x0, y0, x1, y1)) of the actor's rectangles at a frame, in px, ends exclusive;
    drawn in order."""
    u = _unit(spec)
    pose = int(actor.pose[frame])
    carry, wave, talk = actor.extras[frame]
    bw, bh = (16 * u, 22 * u) if pose == 11 else (14 * u, 34 * u)
    cx, foot = actor.x[frame], actor.y
    body = (cx - bw / 2, foot - bh, cx + bw / 2, foot)
    head = (cx - 5 * u, body[1] - 10 * u, cx + 5 * u, body[1])
    parts = [(_BODY[pose], body), (_TALK if talk else _SKIN, head)]
    if carry:
        mid = body[1] + bh * 0.4
        parts.append((_CARRY, (body[2], mid, body[2] + 9 * u, mid + 9 * u)))
    if wave:
        swing = 2 * u * np.sin(2 * np.pi * 2 * frame / spec.fps)  # waving at 2 Hz
        left = body[0] - 4 * u + swing
        parts.append((_WAVE, (left, head[1] - 4 * u, left + 4 * u, head[1] + 10 * u)))
    return [(colour, tuple(int(round(v)) for v in rect)) for colour, rect in parts]


def actor_box(actor: Actor, frame: int, spec: Spec) -> tuple[int, int, int, int]:
    """The bounding box (x0, y0, x1, y1) of the actor's pixels at a frame, px, ends exclusive,
    within the frame."""
    rects = np.array([rect for _, rect in actor_parts(actor, frame, spec)])
    x0, y0 = max(0, rects[:, 0].min()), max(0, rects[:, 1].min())
    x1, y1 = min(spec.width, rects[:, 2].max()), min(spec.height, rects[:, 3].max())
    return int(x0), int(y0), int(x1), int(y1)


def actor_actions(actor: Actor, frame: int) -> list[int]:
    """The AVA action ids the actor does at a frame, ascending."""
    extras = [a for a, on in zip(EXTRAS, actor.extras[frame], strict=True) if on]
    return sorted([int(actor.pose[frame]), *extras])


def plan_video(spec: Spec, rng) -> list[Actor]:
    """2..max_actors actors in distinct bands of the frame."""
    count = int(rng.integers(2, spec.max_actors + 1))
    edges = np.linspace(0, spec.width, spec.max_actors + 1)
    bands = sorted(rng.choice(spec.max_actors, count, replace=False))
    return [plan_actor(spec, (edges[b], edges[b + 1]), rng) for b in bands]


def render(spec: Spec, actors: list[Actor], rng) -> np.ndarray:
    """uint8 (F, H, W, 3): the textured background and distractors, faded towards grey, then
    the actors."""
    frames = spec.seconds * spec.fps
    video = synthetic.backdrop(frames, spec.height, spec.width, rng)  # float (F, H, W, 3)
    grey = video.mean(-1, keepdims=True)
    video = grey + BACKGROUND_CHROMA * (video - grey)  # no background looks like an action
    video = np.clip(video, 0, 255).astype(np.uint8)
    for i in range(frames):
        for actor in actors:
            for colour, (x0, y0, x1, y1) in actor_parts(actor, i, spec):
                video[i, max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = colour
    return video


def _norm(box, spec: Spec) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 / spec.width, y0 / spec.height, x1 / spec.width, y1 / spec.height]


def annotate(spec: Spec, actors: list[Actor]) -> dict[int, list[tuple[list[float], list[int]]]]:
    """{timestamp: [(normalised box x1, y1, x2, y2, [action ids]) per actor (= person id)]}."""
    found = {}
    for t in spec.keyframes:
        frame = keyframe_frame(t, spec.fps)
        found[t] = [
            (_norm(actor_box(a, frame, spec), spec), actor_actions(a, frame)) for a in actors
        ]
    return found


def detect(annotations: dict, rng) -> list[tuple[int, list[float], float]]:
    """A noisy person detector's (timestamp, box, score) for the annotated boxes."""
    rows = []
    for t, people in annotations.items():
        for box, _ in people:
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            noisy = np.array(box) + rng.normal(0, 0.04, 4) * [w, h, w, h]
            noisy = np.clip(noisy, 0, 1)
            if noisy[2] - noisy[0] > 0.01 and noisy[3] - noisy[1] > 0.01:
                score = rng.uniform(0.5, 0.8) if rng.random() < 0.05 else rng.uniform(0.85, 0.999)
                rows.append((t, noisy.tolist(), float(score)))
        for _ in range(rng.poisson(0.6)):  # false positives
            w, h = rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.5)
            x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            rows.append((t, [x1, y1, x1 + w, y1 + h], float(rng.uniform(0.02, 0.6))))
    return rows


@dataclasses.dataclass(frozen=True)
class _Job:
    spec: Spec
    index: int
    video_id: str
    split: str


def _write_one(job: _Job) -> dict:
    """Renders and writes one video; returns its annotations and detections."""
    spec = job.spec
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, job.index]))
    actors = plan_video(spec, rng)
    video = render(spec, actors, rng)
    path = os.path.join(spec.out, "videos", f"{job.video_id}.mp4")
    generated.save_video(path, video, spec.fps, keyframe_every=spec.fps)  # a seek decodes <= 1 s
    annotations = annotate(spec, actors)
    det_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, job.index, 1]))
    detections = detect(annotations, det_rng) if job.split == "val" else []
    return {"job": job, "annotations": annotations, "detections": detections}


def _f(v: float) -> str:
    return f"{v:.3f}"


def _excluded(spec: Spec, split: str, ids: list[str]) -> set[tuple[str, int]]:
    """A few keyframes left out: one in each of the split's first two videos."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2**31 - 2, len(split)]))
    keys = list(spec.keyframes)
    return {(v, int(keys[rng.integers(len(keys))])) for v in ids[:2]}


def make_dataset(spec: Spec, *, workers: int | None = None, progress=None) -> dict[str, str]:
    """Writes the dataset (see the module docstring); returns {name: path} of AVA's files."""
    spec.validate()
    ids = video_ids(spec)
    splits = {"val": ids[: spec.num_val], "train": ids[spec.num_val :]}
    jobs = [
        _Job(spec, i, vid, split)
        for split, names in splits.items()
        for vid in names
        for i in [ids.index(vid)]
    ]
    tell = None if progress is None else lambda result: progress(result["job"].video_id)
    results = {"train": [], "val": []}
    for result in generated.write_videos(_write_one, jobs, workers=workers, progress=tell):
        results[result["job"].split].append(result)
    files = {"label_map": _write_label_map(spec)}
    for split, done in results.items():
        done.sort(key=lambda r: r["job"].video_id)
        excluded = _excluded(spec, split, splits[split])
        files |= _write_split(spec, split, done, excluded)
    _write_settings(spec, splits)
    return files


def _write_label_map(spec: Spec) -> str:
    items = (f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in ACTIONS.items())
    return generated.write_lines(os.path.join(spec.out, LABEL_MAP), items)


def _write_split(spec: Spec, split: str, done: list[dict], excluded: set) -> dict[str, str]:
    gt, det, listed = [], [], []
    for result in done:
        vid = result["job"].video_id
        listed.append(f"videos/{vid}.mp4 0\n")
        for t, people in result["annotations"].items():
            if (vid, t) in excluded:
                continue
            for person, (box, actions) in enumerate(people):
                coords = ",".join(_f(v) for v in box)
                gt += [f"{vid},{t:04d},{coords},{a},{person}\n" for a in actions]
        for t, box, score in result["detections"]:
            det.append(f"{vid},{t:04d},{','.join(_f(v) for v in box)},,{score:.6f}\n")
    files = {
        f"{split}_gt": _write_lines(spec, ground_truth_name(split), gt),
        f"{split}_excluded": _write_lines(
            spec, excluded_name(split), [f"{v},{t:04d}\n" for v, t in sorted(excluded)]
        ),
        f"{split}_list": _write_lines(spec, f"{split}.txt", listed),
    }
    if split == "val":
        files["val_detections"] = _write_lines(spec, detections_name(split), det)
    return files


def _write_lines(spec: Spec, name: str, lines: list[str]) -> str:
    return generated.write_lines(os.path.join(spec.out, name), lines)


def _write_settings(spec: Spec, splits: dict[str, list[str]]) -> None:
    settings = dataclasses.asdict(spec) | {
        "cut_start": CUT_START,
        "keyframes": [spec.keyframes.start, spec.keyframes.stop - 1],
        "actions": {str(k): v for k, v in ACTIONS.items()},
        "splits": splits,
    }
    del settings["out"]
    with open(os.path.join(spec.out, SETTINGS), "w") as f:
        json.dump(settings, f, indent=1)
