"""Clip transforms: one random draw per clip applied to every frame; crops within bounds;
eval crops where VideoMAE puts them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vmp_jax.data import randaugment, transforms


def _still_clip(t=4, h=40, w=56, seed=0) -> np.ndarray:
    """The same random frame T times: uint8 (T, H, W, 3)."""
    frame = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.repeat(frame[None], t, axis=0)


def _frames_identical(video: np.ndarray) -> bool:
    return all(np.array_equal(video[0], f) for f in video[1:])


@given(h=st.integers(8, 300), w=st.integers(8, 300), seed=st.integers(0, 1000))
def test_random_resized_box_is_inside_the_frame(h, w, seed):
    top, left, ch, cw = transforms.random_resized_box(h, w, np.random.default_rng(seed))
    assert top >= 0 and left >= 0 and ch > 0 and cw > 0
    assert top + ch <= h and left + cw <= w


@given(h=st.integers(16, 300), w=st.integers(16, 300), seed=st.integers(0, 1000))
def test_multi_scale_box_is_inside_the_frame(h, w, seed):
    top, left, ch, cw = transforms.multi_scale_box(h, w, np.random.default_rng(seed))
    assert top >= 0 and left >= 0 and top + ch <= h and left + cw <= w
    assert min(ch, cw) >= int(min(h, w) * 0.66)


@pytest.mark.parametrize("seed", range(12))
def test_rand_augment_applies_one_policy_to_every_frame(seed):
    out = randaugment.rand_augment(_still_clip(), 3, 9, 0.5, np.random.default_rng(seed))
    assert out.shape == (4, 40, 56, 3) and out.dtype == np.uint8
    assert _frames_identical(out)


def test_rand_augment_changes_pixels_and_off_is_identity():
    clip = _still_clip()
    changed = [
        not np.array_equal(
            randaugment.rand_augment(clip, 2, 9, 0.5, np.random.default_rng(s)), clip
        )
        for s in range(10)
    ]
    assert sum(changed) >= 5
    assert randaugment.rand_augment(clip, 0, 9, 0.5, np.random.default_rng(0)) is clip


def test_every_randaugment_op_runs_at_full_magnitude():
    frames = [Image.fromarray(f) for f in _still_clip(2)]
    for name, (op, level, _) in randaugment._OPS.items():
        out = op(frames, level(1.0))
        assert len(out) == 2 and np.asarray(out[0]).shape == (40, 56, 3), name


def test_crop_resize_and_erasing_are_the_same_on_every_frame():
    clip = _still_clip()
    rng = np.random.default_rng(0)
    box = transforms.random_resized_box(40, 56, rng)
    out = transforms.crop_resize(clip, box, 24)
    assert out.shape == (4, 24, 24, 3) and _frames_identical(out)
    erased = transforms.random_erase(transforms.normalize(out), 1.0, rng)
    changed = np.any(erased != transforms.normalize(out), axis=-1)  # (T, H, W)
    assert changed.any() and all(np.array_equal(changed[0], c) for c in changed[1:])


def test_normalize_uses_imagenet_statistics():
    """(x - mean) / std per channel, with ImageNet's mean (0.485, 0.456, 0.406) and std
    (0.229, 0.224, 0.225) in 0..255 units: the mean maps to 0, black and white to the values
    VideoMamba's torchvision Normalize gives."""
    clip = np.broadcast_to(np.array([124, 116, 104], np.uint8), (1, 2, 2, 3))
    np.testing.assert_allclose(transforms.normalize(clip), 0.0, atol=0.01)
    black_white = np.array([0, 255], np.uint8)[:, None, None, None] * np.ones(
        (2, 1, 1, 3), np.uint8
    )
    out = transforms.normalize(black_white)[:, 0, 0]  # (2, 3)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out[0], -mean / std, rtol=1e-6)  # -2.118, -2.036, -1.804
    np.testing.assert_allclose(out[1], (1 - mean) / std, rtol=1e-6)  # 2.249, 2.429, 2.640


def test_eval_crops_cover_start_centre_and_end_of_the_long_side():
    t, h, w = 2, 32, 80
    video = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, None, :, None], (t, h, w, 3))
    crops = transforms.eval_crops(np.ascontiguousarray(video), 32, 3)
    assert crops.shape == (3, t, 32, 32, 3)
    assert [c[0, 0, 0, 0] for c in crops] == [0, 24, 48]
    assert transforms.eval_crops(np.ascontiguousarray(video), 32, 1)[0, 0, 0, 0, 0] == 24
    with pytest.raises(ValueError, match="eval.num_crops must be 1 or 3"):
        transforms.eval_crops(video, 32, 2)


def test_resize_short_side_keeps_the_aspect():
    out = transforms.resize_short_side(_still_clip(1, 60, 90), 40)
    assert out.shape == (1, 40, 60, 3)
