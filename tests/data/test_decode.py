"""PyAV decoding: frames by index equal a full sequential decode, for several codecs, sizes
and containers; seeking gives the same frames; unreadable files raise DecodeError naming the
file and the reason."""

import os

import av
import numpy as np
import pytest

from tests.data.conftest import broken_files
from vmp_jax.data import decode
from vmp_jax.data.encode import write_video

# (file name, codec, (width, height)): the sizes span 176x144 (QCIF) to 1280x720.
FORMATS = [
    ("h264.mp4", "libx264", (176, 144)),
    ("mpeg4.avi", "mpeg4", (320, 240)),
    ("vp9.webm", "libvpx-vp9", (256, 144)),
    ("hevc.mkv", "libx265", (640, 360)),
    ("mjpeg.avi", "mjpeg", (1280, 720)),
]


def _random_video(frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth random frames (codecs keep them recognisable): uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (frames, -(-height // 16), -(-width // 16), 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)[:, :height, :width]


def _all_frames(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("name,codec,size", FORMATS, ids=[f[0] for f in FORMATS])
def test_frames_by_index_equal_a_full_decode(tmp_path, name, codec, size):
    width, height = size
    path = str(tmp_path / name)
    write_video(path, _random_video(20, width, height), codec=codec)
    reference = _all_frames(path)  # (20, H, W, 3)
    info = decode.probe(path)
    assert (info.num_frames, info.height, info.width) == (20, height, width)
    indices = [7, 0, 19, 7, 12]
    frames, _ = decode.read_frames(path, indices)
    assert frames.dtype == np.uint8 and frames.shape == (5, height, width, 3)
    np.testing.assert_array_equal(frames, reference[indices])


def test_seeking_lands_on_the_asked_frames(tmp_path):
    """A 20 s video with a keyframe every second: far-apart frames are reached by seeks."""
    path = str(tmp_path / "long.mp4")
    write_video(path, _random_video(500, 64, 48, seed=1), fps=25, options={"g": "25"})
    reference = _all_frames(path)
    indices = [3, 140, 141, 260, 499, 499]  # gaps of > 4 s force seeks
    frames, info = decode.read_frames(path, indices)
    assert info.num_frames == 500
    np.testing.assert_array_equal(frames, reference[indices])


def test_plan_sees_the_frame_count(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path, _random_video(12, 32, 32))
    seen = []
    frames, _ = decode.read_frames(path, lambda n: seen.append(n) or [n - 1])
    assert seen == [12]
    np.testing.assert_array_equal(frames, _all_frames(path)[[11]])


def test_bytes_input_equals_file_input(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path, _random_video(10, 32, 32))
    with open(path, "rb") as f:
        data = f.read()
    np.testing.assert_array_equal(
        decode.read_frames(data, [1, 8])[0], decode.read_frames(path, [1, 8])[0]
    )


def test_unreadable_files_raise_decode_error_with_the_reason(tmp_path):
    for reason, path in broken_files(str(tmp_path)).items():
        with pytest.raises(decode.DecodeError, match=f"{os.path.basename(path)}: {reason}"):
            decode.read_frames(path, [0, 25])
    with pytest.raises(decode.DecodeError, match="zero-byte"):
        decode.read_frames(b"", [0])


def test_a_file_without_video_stream_is_named(tmp_path):
    path = str(tmp_path / "audio.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(decode.DecodeError, match="audio.mp4: no video stream"):
        decode.probe(path)


def test_negative_indices_are_rejected(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path, _random_video(4, 32, 32))
    with pytest.raises(ValueError, match="must be >= 0"):
        decode.read_frames(path, [-1])


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \(T, H, W, 3\)"):
        write_video(str(tmp_path / "x.mp4"), np.zeros((2, 8, 8), np.uint8))
