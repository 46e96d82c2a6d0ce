"""Writing frames as a video file with PyAV (the generated dataset, tests, benchmarks)."""

import fractions
import os

import av
import numpy as np

# libx264 gives different bits for the same frames from run to run with its default threading
# and lookahead; these settings make a file a pure function of its frames (seen with PyAV 18).
REPRODUCIBLE_X264 = {"x264-params": "threads=1:sliced-threads=0:lookahead-threads=1:rc-lookahead=0"}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: int | fractions.Fraction = 25,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> None:
    """Encodes uint8 (T, H, W, 3) RGB frames; H and W must be even for 4:2:0 codecs.

    The container follows the file's extension (.mp4, .mkv, .webm, .avi). `options` go to the
    encoder (e.g. {"g": "25"} for a keyframe a second), `container_options` to the muxer (e.g.
    {"movflags": "faststart"} puts an MP4's index first). libx264 defaults to REPRODUCIBLE_X264.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    with av.open(os.fspath(path), mode="w", options=container_options or {}) as container:
        if options is None:
            options = REPRODUCIBLE_X264 if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i  # explicit timestamps: the same frames always give the same file
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
