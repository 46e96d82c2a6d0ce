"""Video decoding with PyAV: frames by index, decoding only what they need.

The frames returned are bit-identical to the same frames of a full in-order decode, but the
decoder jumps to the keyframe before a wanted frame whenever that skips frames, and does not
decode the non-reference frames (most B-frames) that no wanted frame needs. One decoder thread:
the loader's worker processes are the parallelism.

A video is given as a path, a URL (`gs://...`: read in range requests, or whole when the wanted
frames span most of it) or as the encoded file's bytes (TFDS records keep the MP4 bytes).
Frames come back as uint8 (T, H, W, 3) RGB. Anything that is not a readable video (missing,
zero-byte, truncated, not a container, no video stream) raises `DecodeError`, whose message names
the file and the reason; the pipeline turns it into a skipped-and-counted sample.

Indices are frame numbers at the stream's average rate, counted from its first frame, so that
sampling can be planned from `probe` before any frame is decoded. A stream without timestamps
(raw Annex-B H.264: no frame count, no index, no seeking) has its frames numbered by counting;
where a seek leaves that count unknown, every frame is decoded again in order from the first.
"""

import contextlib
import dataclasses
import io
import itertools
import os
from collections.abc import Callable, Sequence

import av
import numpy as np

from vmp_jax import storage

VideoInput = str | os.PathLike | bytes

# In a container without a keyframe index, a wanted frame further ahead than this (in seconds)
# is reached by seeking, not decoding. H.264 keyframes are often seconds apart, and a seek lands
# on the keyframe before the target, so a shorter gap would decode the same frames again.
SEEK_GAP_SECONDS = 4.0
# A video in a bucket is read in range requests of this size (seeks fetch the blocks the wanted
# frames need); one whose wanted frames span more than this share of it is fetched whole, as is
# one no larger than a few blocks (the headers alone would take one or two).
REMOTE_BLOCK_BYTES = 256 * 1024
REMOTE_WHOLE_BYTES = 4 * REMOTE_BLOCK_BYTES
WHOLE_OBJECT_SPAN = 0.5
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
    "corrupt stored frame",  # a frame store's record (vmp_jax.data.frame_store)
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


@dataclasses.dataclass(frozen=True)
class _Remote:
    """A video in a bucket too large to fetch whole at once: read in range requests."""

    url: str
    size: int


def _source(video: VideoInput, name: str) -> "bytes | str | os.PathLike | _Remote":
    """What `_open` opens: a URL becomes its bytes (one request) when the object is at most
    REMOTE_WHOLE_BYTES, else a `_Remote`; DecodeError when it is missing or empty."""
    if isinstance(video, bytes) or not storage.is_url(video):
        return video
    url = os.fspath(video)
    try:
        size = storage.getsize(url)
    except FileNotFoundError:
        raise DecodeError(name, "missing file") from None
    if size == 0:
        raise DecodeError(name, "zero-byte file")
    return storage.read_bytes(url) if size <= REMOTE_WHOLE_BYTES else _Remote(url, size)


@contextlib.contextmanager
def _open(video: "bytes | str | os.PathLike | _Remote", name: str):
    """The open container of a file, bytes or a `_Remote` (a file object reading ranges);
    DecodeError when there is nothing readable."""
    with contextlib.ExitStack() as stack:
        if isinstance(video, bytes):
            if not video:
                raise DecodeError(name, "zero-byte file")
            source = io.BytesIO(video)
        elif isinstance(video, _Remote):
            ranges = storage.open_ranges(video.url, block_size=REMOTE_BLOCK_BYTES, size=video.size)
            source = stack.enter_context(ranges)
        else:
            source = os.fspath(video)
            if not os.path.exists(source):
                raise DecodeError(name, "missing file")
            if os.path.getsize(source) == 0:
                raise DecodeError(name, "zero-byte file")
        try:
            container = stack.enter_context(av.open(source))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DecodeError(name, "not a readable video", str(e)) from e
        if not container.streams.video:
            raise DecodeError(name, "no video stream")
        yield container


def _whole_object(video, wanted: list[int], info: VideoInfo) -> bool:
    """Whether a video read in range requests is better fetched in one: when the wanted
    frames span most of it (segment sampling over the whole clip), range requests would
    fetch it all anyway, in many round trips."""
    span = (wanted[-1] - wanted[0] + 1) / info.num_frames
    return isinstance(video, _Remote) and span > WHOLE_OBJECT_SPAN


def _fps(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0) or 25.0


def _header_frames(container, stream) -> int:
    """The frame count the headers give: the stream's, else its duration x rate, else the
    container's duration x rate (Matroska/WebM); 0 where they give none (a raw stream)."""
    num_frames = stream.frames
    if not num_frames and stream.duration is not None and stream.time_base is not None:
        num_frames = int(round(float(stream.duration * stream.time_base) * _fps(stream)))
    if not num_frames and container.duration:
        num_frames = int(round(container.duration / av.time_base * _fps(stream)))
    return int(num_frames or 0)


def _info(container, stream, name: str) -> VideoInfo:
    """The frame count from the headers, else a count of the stream's packets (which leaves
    the container at its end: see `_rewound`). A stream with no frames raises DecodeError."""
    num_frames = _header_frames(container, stream)
    if not num_frames:
        num_frames = sum(1 for packet in container.demux(stream) if packet.size)
    if num_frames <= 0:
        raise DecodeError(name, "the video stream has no frames")
    height, width = stream.codec_context.height, stream.codec_context.width
    return VideoInfo(int(num_frames), _fps(stream), height, width)


def _rewound(container) -> bool:
    """Whether the container could seek back to its start (a raw stream, such as Annex-B
    H.264, cannot seek at all)."""
    try:
        container.seek(0)
    except av.FFmpegError:
        return False
    return True


def probe(video: VideoInput, *, name: str | None = None) -> VideoInfo:
    """Frame count, rate and size from the container's headers (nothing decoded)."""
    name = _name(video, name)
    with _open(_source(video, name), name) as container:
        return _info(container, container.streams.video[0], name)


Plan = Sequence[int] | Callable[[int], Sequence[int]]


def plan_indices(plan: Plan, num_frames: int) -> Sequence[int]:
    """The indices a plan asks for in a video of `num_frames` frames."""
    return plan(num_frames) if callable(plan) else plan


def read_frames(
    video: VideoInput, plan: Plan, *, name: str | None = None, selective: bool = True
) -> tuple[np.ndarray, VideoInfo]:
    """Decodes the frames at some indices (any order, repeats allowed), bit-identical to the
    same frames of a full in-order decode, decoding only what they need (see `_decode_wanted`).

    Args:
      plan: the indices, or a function from the video's frame count to them (so that one open
        both plans and decodes the clip).
      selective: False decodes as this module did before it skipped frames (frame threads,
        every frame between seeks 4 s apart): the same frames, the benchmark's baseline.

    Returns:
      frames: uint8 (len(indices), H, W, 3), and the video's `VideoInfo`.
    """
    name = _name(video, name)
    video = _source(video, name)
    with _open(video, name) as container:
        stream = container.streams.video[0]
        # One decoder thread: loader workers are the parallelism, frame threads cost 13-22%
        # more CPU, and skipping frames per packet needs packets decoded in the order sent.
        stream.thread_type = "NONE" if selective else "AUTO"
        counted = not _header_frames(container, stream)
        info = _info(container, stream, name)
        indices = plan_indices(plan, info.num_frames)
        wanted = sorted(set(int(i) for i in indices))
        if not wanted or wanted[0] < 0:
            raise ValueError(f"{name}: frame indices must be >= 0, got {list(indices)[:8]}")
        if _whole_object(video, wanted, info):
            data = storage.read_bytes(video.url)
            return read_frames(data, list(indices), name=name, selective=selective)
        try:
            if counted and not _rewound(container):
                raise _PositionLost
            found = _decode_wanted(container, stream, info, wanted, selective)
        except _PositionLost:
            found = None
        except av.FFmpegError as e:
            raise DecodeError(name, "corrupt video data", str(e)) from e
    if found is None:  # frames without timestamps where a seek left their numbers unknown
        found = _decode_in_order(video, name, info, wanted)
    found = _fill_overstated_end(found, wanted, info, name)
    return np.stack([found[int(i)] for i in indices]), info


class _PositionLost(Exception):
    """A decoded frame without a timestamp where its number cannot be counted (after a seek,
    or after frames left undecoded), or a stream that cannot seek: `_decode_in_order` then
    decodes every frame from the start, numbering them by counting."""


def _decode_in_order(video, name: str, info: VideoInfo, wanted: list[int]) -> dict:
    """The wanted frames of a fresh open, decoding every frame from the first, no seek: a
    frame without a timestamp is the one after the frame before it."""
    with _open(video, name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        try:
            return _decode_wanted(container, stream, info, wanted, selective=False, seek=False)
        except av.FFmpegError as e:
            raise DecodeError(name, "corrupt video data", str(e)) from e


@dataclasses.dataclass(frozen=True)
class _Timeline:
    """Frame indices <-> the stream's timestamps: index = round((pts tb - start) fps)."""

    start: int  # the stream's first timestamp, in time_base units
    time_base: float
    fps: float

    @classmethod
    def of(cls, stream, fps: float) -> "_Timeline":
        start = stream.start_time if stream.start_time is not None else 0
        return cls(start, float(stream.time_base), fps)

    def index(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        return int(round((pts - self.start) * self.time_base * self.fps))

    def pts(self, index: int) -> int:
        return self.start + int(round(index / self.fps / self.time_base))


def _keyframes(stream, timeline: _Timeline) -> list[int] | None:
    """Frame indices of the keyframes from the container's index (MP4's sample table, WebM's
    cues), or None where the container has none. MP4 indexes decode times, which precede
    presentation by the B-frame delay: the first entry is the first frame, which fixes the
    shift. Only a guide for when to seek; `_decode_wanted` checks where a seek lands."""
    entries = stream.index_entries
    if not len(entries):
        return None
    shift = timeline.start - entries[0].timestamp
    return [timeline.index(e.timestamp + shift) for e in entries if e.is_keyframe]


def _worth_seeking(position: int, target: int, keyframes: list[int] | None, gap: int) -> bool:
    """Whether to seek for frame `target` with the decoder at frame `position` (-1: nothing
    decoded yet): when a keyframe lies after `position` and at or before `target`, decoding
    can restart there and skip the frames between; without an index, when the gap is long."""
    if keyframes is None:
        return target - max(position, 0) > gap
    return any(position < k <= target for k in keyframes if k > 0)


def _decode_wanted(
    container, stream, info, wanted: list[int], selective: bool = True, seek: bool = True
) -> dict:
    """The wanted frames (sorted, distinct) as {index: uint8 (H, W, 3)}.

    Decodes forward, seeking to the keyframe before a wanted frame whenever that skips frames
    (never with `seek` False), and asks libavcodec not to decode unwanted non-reference
    frames (`skip_frame`, set per packet): no other frame depends on those, so every frame
    returned is the one a full decode gives. A seek that lands after its target (a container
    index that is off) is retried from further back. A frame without a timestamp is numbered
    by counting from the frame before it; after a seek, where that number is unknown, it
    raises `_PositionLost`."""
    timeline = _Timeline.of(stream, info.fps)
    keyframes = _keyframes(stream, timeline) if selective else None
    gap = max(1, int(SEEK_GAP_SECONDS * info.fps)) if seek else float("inf")
    wanted_set = set(wanted) if selective else None  # None: every frame decoded
    found: dict[int, np.ndarray] = {}
    frames, position, i = _frames(container, stream, timeline, wanted_set), -1, 0
    if _worth_seeking(-1, wanted[0], keyframes, gap):
        frames = _seek(container, stream, timeline, wanted_set, wanted[0])
    while i < len(wanted):
        took = False
        for index, frame in frames:
            if index is None and position is None:
                raise _PositionLost  # a frame without a timestamp after a seek
            if index is None or (position is not None and index <= position):
                position += 1  # counted (or a timestamp that does not move forward)
            else:
                position = index
            if wanted[i] <= position:
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                while i < len(wanted) and wanted[i] <= position:
                    found[wanted[i]] = rgb
                    i += 1
                took = True
            if i == len(wanted) or (took and _worth_seeking(position, wanted[i], keyframes, gap)):
                break
        else:
            break  # end of stream
        if i < len(wanted):
            frames = _seek(container, stream, timeline, wanted_set, wanted[i])
            position = None  # known again at the next frame with a timestamp
    return found


def _seek(container, stream, timeline: _Timeline, wanted: set[int] | None, target: int):
    """`_frames` from the keyframe at or before frame `target`. The container's seek is asked
    for `target`, then, while the first frame decoded is past it, for a point further back
    (one second, two, four...), and at last for the stream's start."""
    back = 0
    while True:
        goal = max(0, target - back)
        try:
            container.seek(timeline.pts(goal), stream=stream, backward=True)  # flushes
        except av.FFmpegError as e:  # a stream that cannot seek (a raw stream)
            raise _PositionLost from e
        frames = _frames(container, stream, timeline, wanted)
        first = next(frames, None)
        if first is None or first[0] is None or first[0] <= target or goal == 0:
            return frames if first is None else itertools.chain([first], frames)
        back = 2 * back if back else max(1, int(round(timeline.fps)))


def _frames(container, stream, timeline: _Timeline, wanted: set[int] | None):
    """(index or None, frame) in presentation order from the demuxer's position; non-reference
    frames not in `wanted` are not decoded (with `wanted` None, every frame is)."""
    context, skipped = stream.codec_context, False
    for packet in container.demux(stream):
        index = timeline.index(packet.pts)
        skip = wanted is not None and index is not None and index not in wanted
        context.skip_frame = "NONREF" if skip else "DEFAULT"
        skipped |= skip
        try:
            decoded = context.decode(packet)  # the last, empty packet flushes the decoder
        except av.FFmpegError:
            if any(p.size for p in container.demux(stream)):
                raise  # corrupt data inside the file
            return  # a last packet cut short: the file ends here (reported as truncated)
        for frame in decoded:
            if frame.pts is None and skipped:
                raise _PositionLost  # frames left undecoded: counting would misnumber it
            yield timeline.index(frame.pts), frame


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
