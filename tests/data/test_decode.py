"""PyAV decoding: frames by index equal a full sequential decode, for several codecs, sizes
and containers; seeking gives the same frames; unreadable files raise DecodeError naming the
file and the reason."""

import os

import av
import numpy as np
import pytest

from tests.data.conftest import broken_files
from vmp_jax.data import decode, sampling
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


def _moving_texture(frames: int, width: int, height: int, seed: int) -> np.ndarray:
    """A random texture panning a pixel a frame (motion, so that x264 codes B-frames)."""
    rng = np.random.default_rng(seed)
    texture = _random_video(1, width + frames, height, seed=int(rng.integers(1 << 30)))[0]
    return np.stack([texture[:, t : t + width] for t in range(frames)])


SELECTIVE = [
    ("h264-bframes.mp4", "libx264", {"g": "30", "bframes": "3"}),
    ("vp9.webm", "libvpx-vp9", {"g": "30", "deadline": "realtime", "cpu-used": "8"}),
]


@pytest.mark.parametrize("name,codec,options", SELECTIVE, ids=[f[0] for f in SELECTIVE])
def test_selective_decoding_is_bit_identical_to_a_full_decode(tmp_path, name, codec, options, seed):
    """Seeking to keyframes and not decoding unwanted non-reference frames returns exactly the
    frames of a full in-order decode: fresh random index sets, training plans, and frames on
    either side of each keyframe (where a seek can land wrong)."""
    path = str(tmp_path / name)
    write_video(path, _moving_texture(120, 64, 48, seed=seed), fps=30, codec=codec, options=options)
    reference = _all_frames(path)  # (120, H, W, 3)
    rng = np.random.default_rng(seed)
    plans = [[29, 30, 31], [59, 60, 89, 90], [0, 119], [119], list(range(120))]
    plans += [
        sorted(rng.choice(120, size=k, replace=False)) for k in (1, 2, 4, 8) for _ in range(4)
    ]
    plans += [
        sampling.train_indices(s, 120, 8, 4, rng) for s in ("segment", "dense") for _ in range(4)
    ]
    for plan in plans:
        frames, _ = decode.read_frames(path, plan)
        np.testing.assert_array_equal(frames, reference[plan], err_msg=f"{name} {list(plan)}")
    for plan in plans[-3:]:  # the benchmark's baseline, every frame decoded: the same frames
        frames, _ = decode.read_frames(path, plan, selective=False)
        np.testing.assert_array_equal(frames, reference[plan])


def test_selective_decoding_decodes_fewer_frames(tmp_path, monkeypatch):
    """An 8-frame segment plan over 120 frames coded with B-frames leaves the unwanted
    non-reference ones undecoded: decoding in order up to the last wanted frame (112) takes
    113 frames, this about 60."""
    path = str(tmp_path / "b.mp4")
    write_video(path, _moving_texture(120, 64, 48, seed=3), fps=30, options={"bframes": "3"})
    decoded, frames_of = [], decode._frames

    def counting(*args):
        for item in frames_of(*args):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(decode, "_frames", counting)
    decode.read_frames(path, sampling.test_indices("segment", 120, 8, 4, 0, 1))
    assert 8 <= len(decoded) < 90, decoded


def test_a_seek_that_lands_past_its_target_is_retried_from_further_back(tmp_path, monkeypatch):
    """A container index that is off (here: every seek aimed 40 frames late, past the next
    keyframe) still gives the exact frames: the landing is checked and the seek repeated."""
    path = str(tmp_path / "g.mp4")
    write_video(path, _moving_texture(120, 64, 48, seed=4), fps=30, options={"g": "30"})
    reference = _all_frames(path)
    true_pts = decode._Timeline.pts
    monkeypatch.setattr(decode._Timeline, "pts", lambda self, i: true_pts(self, i + 40))
    plan = [35, 70, 100]
    frames, _ = decode.read_frames(path, plan)
    np.testing.assert_array_equal(frames, reference[plan])


def test_a_raw_stream_without_timestamps_gives_the_exact_frames(tmp_path, seed):
    """Annex-B H.264 (`.h264`): no timestamps, no frame count, no index, and it cannot seek.
    The frames are numbered by counting from the first, far-apart ones included (where a
    container that can seek would seek)."""
    path = str(tmp_path / "raw.h264")
    write_video(path, _moving_texture(300, 64, 48, seed=seed), options={"g": "25", "bf": "2"})
    reference = _all_frames(path)  # (300, 48, 64, 3)
    assert decode.probe(path).num_frames == 300
    for selective in (True, False):
        plan = [3, 140, 299, 140, 0]
        frames, info = decode.read_frames(path, plan, selective=selective)
        assert info.num_frames == 300
        np.testing.assert_array_equal(frames, reference[plan])


def test_frames_without_timestamps_after_a_seek_are_the_exact_ones(tmp_path, monkeypatch, seed):
    """A container that seeks but whose frames carry no timestamps (simulated: every frame's
    number hidden): after a seek a frame's number is unknown, so the frames are decoded in
    order from the first and counted, never counted from the keyframe a seek landed on."""
    path = str(tmp_path / "untimed.mp4")
    write_video(path, _moving_texture(300, 64, 48, seed=seed), options={"g": "25"})
    reference = _all_frames(path)
    frames_of = decode._frames

    def untimed(container, stream, timeline, wanted):
        for _, frame in frames_of(container, stream, timeline, None):  # none left undecoded
            yield None, frame

    monkeypatch.setattr(decode, "_frames", untimed)
    plan = [3, 140, 145]  # 3 -> 140: past keyframes, a seek; 145 follows on
    frames, _ = decode.read_frames(path, plan)
    np.testing.assert_array_equal(frames, reference[plan])
