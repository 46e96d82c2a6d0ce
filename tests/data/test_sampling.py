"""Frame sampling: segment, dense and image plans for training and testing, looping short
videos, and bad arguments."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmp_jax.data import sampling


@given(n=st.integers(1, 400), t=st.integers(1, 32), seed=st.integers(0, 2**16))
def test_segment_training_takes_one_frame_per_segment(n, t, seed):
    indices = sampling.train_indices("segment", n, t, 4, np.random.default_rng(seed))
    assert indices.shape == (t,) and indices.min() >= 0 and indices.max() < n
    if n >= t:
        lo = np.arange(t) * n // t  # segment j is frames [j n / t, (j + 1) n / t)
        hi = np.maximum(np.arange(1, t + 1) * n // t, lo + 1)
        assert np.all((lo <= indices) & (indices < hi))
    else:  # looped
        np.testing.assert_array_equal(indices, np.arange(t) % n)


def test_segment_training_is_random_within_segments():
    rng = np.random.default_rng(0)
    draws = np.stack([sampling.train_indices("segment", 80, 8, 1, rng) for _ in range(200)])
    for j in range(8):
        assert set(draws[:, j]) == set(range(10 * j, 10 * j + 10))


@given(n=st.integers(1, 400), t=st.integers(1, 16), clips=st.integers(1, 5))
def test_segment_test_clips_are_distinct_offsets_in_each_segment(n, t, clips):
    plans = [sampling.test_indices("segment", n, t, 4, c, clips) for c in range(clips)]
    for plan in plans:
        assert plan.shape == (t,) and plan.min() >= 0 and plan.max() < n
        assert np.all(np.diff(plan) >= 0) or n < t
    if n >= t * clips:  # room for every clip: each segment's clips are strictly increasing
        np.testing.assert_array_less(np.stack(plans)[:-1], np.stack(plans)[1:])


def test_dense_clips_are_rate_apart_and_loop_when_short():
    rng = np.random.default_rng(1)
    clip = sampling.train_indices("dense", 100, 8, 4, rng)
    np.testing.assert_array_equal(np.diff(clip), 4)
    assert 0 <= clip[0] <= 100 - 29
    short = sampling.train_indices("dense", 10, 8, 4, rng)
    np.testing.assert_array_equal(short, (4 * np.arange(8)) % 10)
    starts = [sampling.test_indices("dense", 100, 8, 4, c, 3)[0] for c in range(3)]
    assert starts == sorted(starts) and starts[0] < starts[-1]


def test_image_sampling_takes_one_frame():
    assert sampling.train_indices("image", 5, 1, 1, np.random.default_rng(0)).shape == (1,)
    assert sampling.test_indices("image", 1, 1, 1, 0, 1).tolist() == [0]


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="data.sampling must be one of"):
        sampling.train_indices("uniform", 10, 8, 1, rng)
    with pytest.raises(ValueError, match="at least one frame"):
        sampling.train_indices("segment", 0, 8, 1, rng)
    with pytest.raises(ValueError, match="clip 3 out of range for 3 clips"):
        sampling.test_indices("segment", 10, 8, 1, 3, 3)
