"""Diagnostic tasks: generated videos in which the paper's two failure modes can show.

Both tasks are built around the model's token order. A clip of T frames of S x S pixels with
patch size p has G = S / p patches a side and P = G^2 a frame; the sequence is [CLS, frame 0's
patches row by row, frame 1's, ...], so patch (r, c) of frame t is token 1 + t P + r G + c. The
classifier reads the CLS token, which the forward scan meets first and the backward scan last:
whatever decides the class has to reach CLS through the backward scan's M_b (SPEC section 2).

- decay: two classes, decided by one brief event: the whole last frame (its P tokens are the
  farthest from CLS, at least 1 + (T - 1) P positions away in the backward scan) flashes red
  (class 0) or blue (class 1). Distractors: single-patch flashes of the same two colours in
  the earlier frames, and two wandering blobs. The knob is T: the event's distance from the
  readout grows with (T - 1) P (4 and 32 frames of 16 patches: 49 and 497 tokens).
- contradiction: two classes, decided by a relation between two regions: whether the grey
  markers of region A (every patch of frame 0) are brighter than those of region B (every
  patch of frame 1 + knob) (class 1) or darker (class 0; they differ by at least 60 of 255).
  Every patch of every other frame holds a grey marker of the same shape and a random
  brightness, so between A and B lie `knob` P look-alike irrelevant tokens (0, 3 and 6 frames:
  0, 48 and 96 tokens). Single patches as regions were not learned by the suite's model in its
  budget (192 steps: chance even with no look-alikes); whole frames are, at 0 frames between.

Rendering draws everything from the rng before the deciding element, whose content alone
depends on the label: two videos from the same seed with different labels differ only inside
`deciding_box`. Frames are exactly T, so "segment" sampling reads every one of them.
"""

import dataclasses

import numpy as np

from vmp_jax.data import synthetic

TASKS = ("decay", "contradiction")
CLASS_NAMES = {"decay": ["red", "blue"], "contradiction": ["a_darker", "a_brighter"]}
PALETTE = np.array([(225, 35, 35), (35, 35, 225)], np.float32)  # decay's red and blue
RED, BLUE = 0, 1
MIN_CONTRAST = 60  # contradiction: A and B differ by at least this much brightness
MARKER_MARGIN = 1  # contradiction: a marker fills its patch but for this many pixels a side
DEFAULT_KNOBS = {"decay": (4, 32), "contradiction": (0, 3, 6)}
KNOB_NAMES = {"decay": "frames", "contradiction": "frames between"}

Box = tuple[int, int, int, int, int]  # (frame, top, left, height, width)


@dataclasses.dataclass(frozen=True)
class Task:
    """One task at one knob setting, and the clip geometry it is built for."""

    name: str
    knob: int
    size: int = 32
    patch: int = 8
    frames: int = 8  # contradiction's clip length (decay's is the knob)

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.name!r}")
        if self.size % self.patch or self.size % 2 or self.size < 16:
            raise ValueError(
                f"--size ({self.size}) must be even, at least 16 and a multiple of the patch "
                f"size ({self.patch})"
            )
        least = 2 if self.name == "decay" else 0
        if self.knob < least:
            raise ValueError(f"--knob must be at least {least}, got {self.knob}")
        if self.name == "contradiction" and self.knob > self.frames - 2:
            raise ValueError(
                f"contradiction: --knob (the frames between A and B) must be at most "
                f"{self.frames - 2} for {self.frames} frames, got {self.knob}"
            )

    @property
    def grid(self) -> int:
        return self.size // self.patch

    @property
    def per_frame(self) -> int:
        return self.grid**2

    @property
    def num_frames(self) -> int:
        return self.knob if self.name == "decay" else self.frames

    @property
    def frames_ab(self) -> tuple[int, int]:
        """Contradiction: the frames of regions A and B, `knob` irrelevant frames between."""
        return 0, 1 + self.knob

    @property
    def class_names(self) -> list[str]:
        return CLASS_NAMES[self.name]

    def patch_box(self, index: int, margin: int = 0) -> Box:
        """The pixels of patch `index` of the patch sequence (frame-major), shrunk by margin."""
        frame, cell = divmod(index, self.per_frame)
        row, col = divmod(cell, self.grid)
        p = self.patch
        return frame, row * p + margin, col * p + margin, p - 2 * margin, p - 2 * margin

    def deciding_boxes(self) -> list[Box]:
        """Where the label lives: decay's event; contradiction's markers A and B."""
        frames = (self.num_frames - 1,) if self.name == "decay" else self.frames_ab
        return [(frame, 0, 0, self.size, self.size) for frame in frames]

    def distance_to_cls(self) -> int:
        """The position of the farthest deciding region's first token: its distance from
        CLS (token 0)."""
        frame, top, left, _, _ = self.deciding_boxes()[-1]
        return 1 + frame * self.per_frame + (top // self.patch) * self.grid + left // self.patch

    def __call__(self, label: int, rng) -> np.ndarray:
        """One video of class `label`: float32 (T, S, S, 3) in [0, 255]."""
        if label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {label}")
        t, s = self.num_frames, self.size
        video = rng.uniform(90, 160, size=3) + rng.normal(0, 4, (t, s, s, 3))
        video = video.astype(np.float32)
        if self.name == "decay":
            return self._decay(video, label, rng)
        return self._contradiction(video, label, rng)

    def _decay(self, video, label, rng) -> np.ndarray:
        synthetic.draw_distractors(video, rng)
        before = (self.num_frames - 1) * self.per_frame  # patches of the frames before the event
        flashes = rng.choice(before, size=min(before, self.num_frames), replace=False)
        for index in flashes:  # look-alikes: single patches of the event's colours, earlier
            _fill(video, self.patch_box(int(index)), PALETTE[rng.integers(2)])
        (event,) = self.deciding_boxes()
        _fill(video, event, PALETTE[RED if label == 0 else BLUE])
        return video

    def _contradiction(self, video, label, rng) -> np.ndarray:
        margin, total = MARKER_MARGIN, self.num_frames * self.per_frame
        brightness = rng.uniform(20, 235, size=total)  # every patch's marker: look-alikes
        dark = rng.uniform(20, 235 - MIN_CONTRAST)
        bright = rng.uniform(dark + MIN_CONTRAST, 235)
        frame_a, frame_b = self.frames_ab
        brightness[frame_a * self.per_frame : (frame_a + 1) * self.per_frame] = (
            bright if label else dark
        )
        brightness[frame_b * self.per_frame : (frame_b + 1) * self.per_frame] = (
            dark if label else bright
        )
        for index in range(total):
            _fill(video, self.patch_box(index, margin), np.full(3, brightness[index]))
        return video


def _fill(video: np.ndarray, box: Box, colour: np.ndarray) -> None:
    frame, top, left, h, w = box
    video[frame, top : top + h, left : left + w] = colour


def oracle(task: Task, video: np.ndarray) -> int:
    """The label read from a (decoded) video's deciding pixels alone: decay, the nearer of red
    and blue to the event's mean colour; contradiction, whether A's mean is brighter than B's."""
    means = [
        video[frame, top : top + h, left : left + w].reshape(-1, 3).mean(0)
        for frame, top, left, h, w in task.deciding_boxes()
    ]  # (3,) each
    if task.name == "decay":
        return int(np.argmin(np.linalg.norm(PALETTE - means[0], axis=1)))  # RED 0, BLUE 1
    return int(means[0].mean() > means[1].mean())


@dataclasses.dataclass(frozen=True)
class Spec:
    """What `make_dataset` writes (the fields `synthetic.write_dataset` reads, and the task)."""

    out: str
    task: Task
    videos_per_class: int = 100
    fps: int = 25
    val_fraction: float = 0.2
    seed: int = 0


def make_dataset(spec: Spec, *, workers: int | None = None, progress=None) -> dict[str, str]:
    """Writes the task's videos (H.264) and list files, as `vmp make-synthetic` does."""
    return synthetic.write_dataset(
        spec, spec.task.class_names, spec.task, workers=workers, progress=progress
    )
