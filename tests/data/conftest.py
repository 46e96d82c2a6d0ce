"""Data-test helpers: a factory of broken video files."""

import os

import numpy as np

from vmp_jax.data.encode import write_video


def broken_files(folder: str) -> dict[str, str]:
    """reason -> path of a file that is not a readable video for that reason."""
    files = {
        "missing file": os.path.join(folder, "missing.mp4"),
        "zero-byte file": os.path.join(folder, "empty.mp4"),
        "not a readable video": os.path.join(folder, "text.mp4"),
        "truncated": os.path.join(folder, "truncated.mp4"),
    }
    open(files["zero-byte file"], "wb").close()
    with open(files["not a readable video"], "w") as f:
        f.write("this is not a video\n" * 50)
    good = os.path.join(folder, "faststart.mp4")  # index first: a cut file still opens
    frames = np.random.default_rng(0).integers(0, 255, (30, 32, 32, 3), dtype=np.uint8)
    write_video(good, frames, container_options={"movflags": "faststart"})
    with open(good, "rb") as f:
        data = f.read()
    with open(files["truncated"], "wb") as f:
        f.write(data[: len(data) // 2])
    return files
