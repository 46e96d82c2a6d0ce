"""Writing frames as a video file with PyAV (the generated dataset, tests, benchmarks)."""

import os

import av
import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> None:
    """Encodes uint8 (T, H, W, 3) RGB frames; H and W must be even for 4:2:0 codecs.

    The container follows the file's extension (.mp4, .mkv, .webm, .avi).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
