"""Which frames of a video make a clip: frame indices only, planned before decoding.

- "segment" (TSN/SSv2 style, VideoMamba's choice for K400 too): the video is cut into T equal
  segments and one frame taken from each: a random one in training, at a fixed offset per test
  clip (clip c of C takes the point (c + 1/2) / C of every segment).
- "dense" (K400 style): T frames `rate` apart from a random start in training; the test clips'
  starts are spread evenly over the video.
- "image": one frame (T = 1), for image datasets and image-style use of a video.

A video shorter than the clip is looped: indices wrap around modulo its length.
"""

import numpy as np

SAMPLINGS = ("segment", "dense", "image")


def check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"data.sampling must be one of {SAMPLINGS}, got {sampling!r}")


def train_indices(
    sampling: str, num_frames: int, clip_len: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """int (clip_len,) frame indices of one random training clip."""
    check_sampling(sampling)
    _check(num_frames, clip_len)
    if sampling == "image":
        return np.array([rng.integers(num_frames)])
    if sampling == "dense":
        span = (clip_len - 1) * rate + 1
        start = rng.integers(max(num_frames - span, 0) + 1)
        return (start + rate * np.arange(clip_len)) % num_frames
    if num_frames < clip_len:
        return np.arange(clip_len) % num_frames
    bounds = np.linspace(0, num_frames, clip_len + 1)
    starts = np.floor(bounds[:-1]).astype(int)
    ends = np.maximum(np.floor(bounds[1:]).astype(int), starts + 1)
    return rng.integers(starts, ends)


def test_indices(
    sampling: str, num_frames: int, clip_len: int, rate: int, clip: int, num_clips: int
) -> np.ndarray:
    """int (clip_len,) frame indices of test clip `clip` of `num_clips`."""
    check_sampling(sampling)
    _check(num_frames, clip_len)
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} out of range for {num_clips} clips")
    where = (clip + 0.5) / num_clips  # in (0, 1): this clip's place in each segment or the video
    if sampling == "image":
        return np.array([int(where * num_frames)])
    if sampling == "dense":
        span = (clip_len - 1) * rate + 1
        start = int(round(max(num_frames - span, 0) * where))
        return (start + rate * np.arange(clip_len)) % num_frames
    if num_frames < clip_len:
        return np.arange(clip_len) % num_frames
    segment = num_frames / clip_len
    return np.floor(segment * (np.arange(clip_len) + where)).astype(int)


def _check(num_frames: int, clip_len: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if clip_len < 1:
        raise ValueError(f"clip length must be at least 1, got {clip_len}")
