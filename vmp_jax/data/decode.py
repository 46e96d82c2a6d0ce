"""Video decoding with PyAV: frames by index, seeking to the clip rather than decoding the file.

A video is given as a path or as the encoded file's bytes (TFDS records keep the MP4 bytes).
Frames come back as uint8 (T, H, W, 3) RGB. Anything that is not a readable video (missing,
zero-byte, truncated, not a container, no video stream) raises `DecodeError`, whose message names
the file and the reason; the pipeline turns it into a skipped-and-counted sample.

Indices are frame numbers at the stream's average rate, counted from its first frame, so that
sampling can be planned from `probe` before any frame is decoded.
"""

import dataclasses
import io
import os
from collections.abc import Callable, Sequence

import av
import numpy as np

VideoInput = str | os.PathLike | bytes

# A wanted frame further ahead than this (in seconds) is reached by seeking, not decoding. H.264
# keyframes are often seconds apart, and a seek lands on the keyframe before the target, so a
# shorter gap would decode the same frames again.
SEEK_GAP_SECONDS = 4.0
# Containers may overstate the frame count by a frame or two; a shortfall up to this fraction
# repeats the last frame, a larger one is a truncated file.
FRAME_COUNT_SLACK = 0.05


# Why a file cannot be read, in the words DecodeError uses (its message: "NAME: REASON ...").
REASONS = (
    "missing file",
    "zero-byte file",
    "not a readable video",
    "not a readable image",
    "no video stream",
    "the video stream has no frames",
    "corrupt video data",
    "no frame could be decoded",
    "truncated",
)


class DecodeError(ValueError):
    """A file that cannot be read as a video: `name` (the file), `reason` (one of REASONS) and
    an optional detail; the message is "NAME: REASON" or "NAME: REASON (DETAIL)"."""

    def __init__(self, name: str, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise AssertionError(f"DecodeError: reason {reason!r} is not one of {REASONS}")
        self.name, self.reason, self.detail = name, reason, detail
        super().__init__(f"{name}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # picklable across worker processes despite the extra arguments
        return type(self), (self.name, self.reason, self.detail)


def parse_error(message: str) -> tuple[str, str]:
    """(name, reason) of a DecodeError's message, e.g. one carried across worker processes as
    text: the first ": REASON" of REASONS splits it (names may hold colons themselves)."""
    hits = [(message.find(f": {r}"), r) for r in REASONS if f": {r}" in message]
    if not hits:
        return message, "unknown"
    start, reason = min(hits)
    return message[:start], reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _name(video: VideoInput, name: str | None) -> str:
    if name is not None:
        return name
    return "<bytes>" if isinstance(video, bytes) else os.fspath(video)


def _open(video: VideoInput, name: str) -> av.container.InputContainer:
    if not isinstance(video, bytes):
        if not os.path.exists(video):
            raise DecodeError(name, "missing file")
        if os.path.getsize(video) == 0:
            raise DecodeError(name, "zero-byte file")
    elif not video:
        raise DecodeError(name, "zero-byte file")
    try:
        container = av.open(io.BytesIO(video) if isinstance(video, bytes) else os.fspath(video))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DecodeError(name, "not a readable video", str(e)) from e
    if not container.streams.video:
        container.close()
        raise DecodeError(name, "no video stream")
    return container


def _info(container, stream, name: str) -> VideoInfo:
    """From the headers: the stream's frame count, else its duration x rate, else the
    container's duration x rate (Matroska/WebM), else a count of the stream's packets.
    A stream with no frames raises DecodeError."""
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    num_frames = stream.frames
    if not num_frames and stream.duration is not None and stream.time_base is not None:
        num_frames = int(round(float(stream.duration * stream.time_base) * fps))
    if not num_frames and container.duration:
        num_frames = int(round(container.duration / av.time_base * fps))
    if not num_frames:
        num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
    if num_frames <= 0:
        raise DecodeError(name, "the video stream has no frames")
    return VideoInfo(int(num_frames), fps, stream.codec_context.height, stream.codec_context.width)


def probe(video: VideoInput, *, name: str | None = None) -> VideoInfo:
    """Frame count, rate and size from the container's headers (nothing decoded)."""
    name = _name(video, name)
    with _open(video, name) as container:
        return _info(container, container.streams.video[0], name)


Plan = Sequence[int] | Callable[[int], Sequence[int]]


def plan_indices(plan: Plan, num_frames: int) -> Sequence[int]:
    """The indices a plan asks for in a video of `num_frames` frames."""
    return plan(num_frames) if callable(plan) else plan


def read_frames(
    video: VideoInput, plan: Plan, *, name: str | None = None
) -> tuple[np.ndarray, VideoInfo]:
    """Decodes the frames at some indices (any order, repeats allowed).

    Args:
      plan: the indices, or a function from the video's frame count to them (so that one open
        both plans and decodes the clip).

    Returns:
      frames: uint8 (len(indices), H, W, 3), and the video's `VideoInfo`.
    """
    name = _name(video, name)
    with _open(video, name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        info = _info(container, stream, name)
        indices = plan_indices(plan, info.num_frames)
        wanted = sorted(set(int(i) for i in indices))
        if not wanted or wanted[0] < 0:
            raise ValueError(f"{name}: frame indices must be >= 0, got {list(indices)[:8]}")
        try:
            found = _decode_wanted(container, stream, info, wanted)
        except av.FFmpegError as e:
            raise DecodeError(name, "corrupt video data", str(e)) from e
    found = _fill_overstated_end(found, wanted, info, name)
    return np.stack([found[int(i)] for i in indices]), info


def _decode_wanted(container, stream, info: VideoInfo, wanted: list[int]) -> dict:
    """Decodes forward from a seek before each far-apart group of wanted frames."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    seek_gap = max(1, int(SEEK_GAP_SECONDS * info.fps))
    found: dict[int, np.ndarray] = {}
    i = 0
    while i < len(wanted):
        if i > 0 or wanted[0] > seek_gap:
            target = start + wanted[i] / info.fps
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        position, took = -1, False
        for frame in container.decode(stream):
            index = int(round((frame.time - start) * info.fps)) if frame.time is not None else -1
            position = index if index > position else position + 1
            if wanted[i] <= position:
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                while i < len(wanted) and wanted[i] <= position:
                    found[wanted[i]] = rgb
                    i += 1
                took = True
            # Only after taking a frame: a seek may land far before its target.
            if i == len(wanted) or (took and wanted[i] - position > seek_gap):
                break
        else:
            break  # end of stream
    return found


def _fill_overstated_end(found: dict, wanted: list[int], info: VideoInfo, name: str) -> dict:
    missing = [w for w in wanted if w not in found]
    if not missing:
        return found
    if not found:
        raise DecodeError(name, "no frame could be decoded")
    last = max(found)
    shortfall = info.num_frames - last - 1
    if missing[0] < last or shortfall > max(2, FRAME_COUNT_SLACK * info.num_frames):
        raise DecodeError(
            name,
            "truncated",
            f"decoded frames up to {last} of the {info.num_frames} the container announces",
        )
    return found | {w: found[last] for w in missing}
