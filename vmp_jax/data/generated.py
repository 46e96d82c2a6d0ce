"""What the generated datasets' writers share (`synthetic`, `synthetic_ava`, `diagnostic`):
the videos rendered and encoded in worker processes with a progress call for each, every file
a pure function of its frames (reproducible H.264), and the text files beside them."""

import os
from collections.abc import Callable, Iterable

import numpy as np

from vmp_jax.data import parallel
from vmp_jax.data.encode import REPRODUCIBLE_X264, write_video


def save_video(path: str, frames: np.ndarray, fps: int, *, keyframe_every: int | None = None):
    """Writes frames (T, H, W, 3), float or uint8, clipped to 0..255, as H.264 at `path` (its
    folder made), the same bytes for the same frames (REPRODUCIBLE_X264).

    Args:
      keyframe_every: frames from one keyframe to the next (a seek decodes at most that
        many); None: x264's default (250).
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    options = None if keyframe_every is None else REPRODUCIBLE_X264 | {"g": str(keyframe_every)}
    write_video(path, np.clip(frames, 0, 255).astype(np.uint8), fps=fps, options=options)


def write_videos(
    write_one: Callable, jobs: Iterable, *, workers=None, progress=None, chunksize: int = 1
) -> list:
    """[write_one(job) for each job], in order, run in `workers` processes (default: all cores;
    `parallel.map_in_processes`: `write_one` and the jobs must pickle); `progress`, if given,
    is called with each result as it comes."""
    results = []
    for result in parallel.map_in_processes(write_one, jobs, workers, chunksize=chunksize):
        if progress is not None:
            progress(result)
        results.append(result)
    return results


def write_lines(path: str, lines: Iterable[str]) -> str:
    """Writes `lines` (each ending in a newline) to `path`; returns `path`."""
    with open(path, "w") as f:
        f.writelines(lines)
    return path
