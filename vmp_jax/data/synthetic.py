"""The generated motion dataset: the embedded default of the demo and the tests.

Each class is a motion: one shape crossing the frame in a direction, or two shapes moving one
after the other (a relay). Classes come in pairs, a motion and its exact time reversal (right and
left, a relay and the relay played backwards), so the frames of a class-2k video and of a
class-2k+1 video are drawn from the same distribution: a model that averages over frames is at
chance within each pair and only temporal order separates them. Backgrounds are textured and pan
in a random direction, and two distractor blobs wander at random, so that neither "the thing
that moves" nor colour gives the answer away. The texture is faint (amplitude 3-8 of 255, noise
std 4) and the mover large (radius a fifth of the frame): with stronger texture (8-25, noise
12) and a smaller mover (a sixth) the demo model stayed at the 50% of the motion axis alone.

Files: `OUT/videos/<class>/<class>_<i>.mp4` (H.264), `OUT/train.txt` and `OUT/val.txt` in the
`path label` list format (paths relative to OUT), and `OUT/classes.txt`.
"""

import dataclasses
import os

import numpy as np

from vmp_jax.data import generated

# (dy, dx) of the base motion of each class pair; the pair's second class is its time reversal.
_DIRECTIONS = {"right": (0, 1), "down": (1, 0), "down-right": (1, 1), "down-left": (1, -1)}
_OPPOSITE = {"right": "left", "down": "up", "down-right": "up-left", "down-left": "up-right"}
MAX_CLASSES = 4 * len(_DIRECTIONS)


def class_names(num_classes: int) -> list[str]:
    """Class 2k is a base motion, class 2k+1 the same motion reversed in time."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"--classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    names = []
    for d in _DIRECTIONS:
        names += [d, _OPPOSITE[d]]
    for d in _DIRECTIONS:
        names += [f"relay-{d}", f"relay-{d}-reversed"]
    return names[:num_classes]


@dataclasses.dataclass(frozen=True)
class Spec:
    """What `make_dataset` writes."""

    out: str
    classes: int = 4
    videos_per_class: int = 100
    frames: int = 32
    height: int = 96
    width: int = 96
    fps: int = 25
    val_fraction: float = 0.2
    seed: int = 0


def render(label: int, num_classes: int, frames: int, height: int, width: int, rng) -> np.ndarray:
    """One video of class `label`: uint8 (T, H, W, 3)."""
    class_names(num_classes)  # validates
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} out of range for {num_classes} classes")
    pair, reverse = divmod(label, 2)
    direction = list(_DIRECTIONS.values())[pair % len(_DIRECTIONS)]
    video = backdrop(frames, height, width, rng)
    if pair < len(_DIRECTIONS):
        shape = ("circle", "square", "triangle")[rng.integers(3)]
        _draw_mover(video, shape, direction, 0.0, 1.0, rng)
    else:  # relay: a circle crosses in the first half, then a square in the second.
        _draw_mover(video, "circle", direction, 0.0, 0.5, rng)
        _draw_mover(video, "square", direction, 0.5, 1.0, rng)
    return video[::-1].copy() if reverse else video


def backdrop(t: int, h: int, w: int, rng) -> np.ndarray:
    """What no class shows: the panning textured background and two distractor blobs, float
    (T, H, W, 3) in [0, 255] (`synthetic_ava` draws its actors on it too)."""
    video = _background(t, h, w, rng)
    draw_distractors(video, rng)
    return video


def _background(t: int, h: int, w: int, rng) -> np.ndarray:
    """A sum of random colour gratings, panned over time: float (T, H, W, 3) in [0, 255]."""
    pad = max(h, w) // 4
    yy, xx = np.mgrid[0 : h + 2 * pad, 0 : w + 2 * pad].astype(np.float32)
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.float32)
    for _ in range(4):
        freq, angle, phase = rng.uniform(0.05, 0.4), rng.uniform(0, np.pi), rng.uniform(0, 6.3)
        wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        canvas += wave[..., None] * rng.uniform(3, 8, size=3)
    canvas += rng.uniform(60, 180, size=3) + rng.normal(0, 4, canvas.shape)
    vy, vx = rng.uniform(-1, 1, size=2) * pad / (2 * max(t - 1, 1))  # a slow pan
    video = np.empty((t, h, w, 3), np.float32)
    for i in range(t):
        oy, ox = int(round(pad + vy * i)), int(round(pad + vx * i))
        video[i] = canvas[oy : oy + h, ox : ox + w]
    return video


def _mask(shape: str, h: int, w: int, cy, cx, r) -> np.ndarray:
    """Boolean (T, H, W) of a shape of radius r centred at per-frame (cy, cx) (T,)."""
    yy = np.arange(h, dtype=np.float32)[None, :, None] - np.asarray(cy)[:, None, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :] - np.asarray(cx)[:, None, None]
    if shape == "circle":
        return yy**2 + xx**2 <= r**2
    if shape == "square":
        return (np.abs(yy) <= r * 0.85) & (np.abs(xx) <= r * 0.85)
    return (yy <= r * 0.8) & (yy >= -r) & (np.abs(xx) <= (yy + r) * 0.6)  # triangle


def draw_distractors(video: np.ndarray, rng) -> None:
    """Two soft blobs on random walks, unrelated to the class."""
    t, h, w, _ = video.shape
    for _ in range(2):
        steps = rng.normal(0, min(h, w) / 30, size=(t, 2))
        path = np.cumsum(steps, axis=0) + rng.uniform(0.2, 0.8, size=2) * (h, w)
        mask = _mask("circle", h, w, path[:, 0], path[:, 1], min(h, w) / 12)
        video[mask] = video[mask] * 0.5 + rng.uniform(0, 255, size=3) * 0.5


def _draw_mover(video: np.ndarray, shape: str, direction, t0: float, t1: float, rng) -> None:
    """A solid shape crossing the frame along `direction` between clip fractions t0 and t1,
    standing at its start before t0 and at its end after t1."""
    t, h, w, _ = video.shape
    r = min(h, w) / 5
    progress = np.clip((np.linspace(0, 1, t) - t0) / (t1 - t0), 0, 1)  # (T,)
    start = rng.uniform(0.1, 0.2)
    travel = rng.uniform(0.6, 0.8)
    along = start + travel * progress  # (T,) fraction of the frame along each moving axis
    dy, dx = direction
    cy = (along if dy > 0 else 1 - along) if dy else np.full(t, rng.uniform(0.25, 0.75))
    cx = (along if dx > 0 else 1 - along) if dx else np.full(t, rng.uniform(0.25, 0.75))
    mask = _mask(shape, h, w, cy * (h - 1), cx * (w - 1), r)
    hue = np.eye(3)[rng.integers(3)] * 200 + rng.uniform(0, 55, size=3)
    video[mask] = hue


def _write_one(args) -> str:
    path, label, renderer, fps, seed = args
    generated.save_video(path, renderer(label, np.random.default_rng(seed)), fps)
    return path


def make_dataset(spec: Spec, *, workers: int | None = None, progress=None) -> dict[str, str]:
    """Writes the dataset and returns the paths of its list files.

    Args:
      workers: processes encoding in parallel (default: all cores).
      progress: optional callable, called with each finished video's path.
    """
    names = class_names(spec.classes)
    if spec.height % 2 or spec.width % 2 or min(spec.height, spec.width) < 16:
        raise ValueError(f"--size must be even and at least 16, got {spec.height}x{spec.width}")
    renderer = MotionRenderer(spec.classes, spec.frames, spec.height, spec.width)
    return write_dataset(spec, names, renderer, workers=workers, progress=progress)


@dataclasses.dataclass(frozen=True)
class MotionRenderer:
    """`render` with the dataset's sizes bound: (label, rng) -> frames (picklable, for the
    encoding processes)."""

    num_classes: int
    frames: int
    height: int
    width: int

    def __call__(self, label: int, rng) -> np.ndarray:
        return render(label, self.num_classes, self.frames, self.height, self.width, rng)


def write_dataset(spec, names, renderer, *, workers=None, progress=None) -> dict[str, str]:
    """Writes `spec.videos_per_class` videos of each class in `names`, `renderer(label, rng)`
    giving each one's frames (T, H, W, 3), every video from its own seed (spec.seed, label,
    index); the first `val_fraction` of each class go to val.txt. Returns the list files'
    paths. (`spec`: anything with out, videos_per_class, fps, val_fraction and seed.)"""
    if spec.videos_per_class < 2:
        raise ValueError(f"--videos-per-class must be at least 2, got {spec.videos_per_class}")
    n_val = max(1, int(round(spec.videos_per_class * spec.val_fraction)))
    jobs, lines = [], {"train": [], "val": []}
    for label, name in enumerate(names):
        for i in range(spec.videos_per_class):
            rel = f"videos/{name}/{name}_{i:04d}.mp4"
            seed = np.random.SeedSequence([spec.seed, label, i])
            jobs.append((os.path.join(spec.out, rel), label, renderer, spec.fps, seed))
            lines["val" if i < n_val else "train"].append(f"{rel} {label}\n")
    generated.write_videos(_write_one, jobs, workers=workers, progress=progress, chunksize=4)
    lists = {
        split: generated.write_lines(os.path.join(spec.out, f"{split}.txt"), rows)
        for split, rows in lines.items()
    }
    generated.write_lines(os.path.join(spec.out, "classes.txt"), (f"{n}\n" for n in names))
    return lists
