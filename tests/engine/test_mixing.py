"""Mixup / cutmix over the global batch, on the device: targets that match the mixed pixels,
draws fixed by (seed, step), and the same result on a batch sharded over 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vmp_jax.engine.mixing import Mixing, smooth_one_hot

K, B = 5, 8
LABELS = np.array([0, 1, 2, 3, 4, 1, 2, 0], np.int32)


def _one_hot_videos() -> np.ndarray:
    """Each video filled with its one-hot label: float32 (B, 2, 8, 8, K)."""
    return np.broadcast_to(
        np.eye(K, dtype=np.float32)[LABELS][:, None, None, None], (B, 2, 8, 8, K)
    ).copy()


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0), (0.0, 0.0)])
@pytest.mark.parametrize("step", [0, 1, 7])
def test_targets_match_the_mixed_pixels(mixup, cutmix, step):
    """Each pixel's value is the weight of each label, so the targets (before smoothing) must
    equal the mean of the mixed video, whichever of mixup and cutmix the step drew."""
    mixing = Mixing(K, mixup=mixup, cutmix=cutmix, switch_prob=0.5, seed=3)
    mixed, targets = mixing(jnp.asarray(_one_hot_videos()), jnp.asarray(LABELS), step)
    mixed, targets = np.asarray(mixed), np.asarray(targets)
    assert mixed.shape == (B, 2, 8, 8, K) and targets.shape == (B, K)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), targets, atol=1e-5)
    if mixup or cutmix:  # pairs are the batch's reversed order
        np.testing.assert_allclose(
            targets + targets[::-1], np.eye(K)[LABELS] + np.eye(K)[LABELS[::-1]], atol=1e-6
        )


def test_kind_names_what_the_step_does():
    """Cutmix pastes pixels, so a cut one-hot video holds only 0s and 1s; mixup blends them."""
    videos, labels = jnp.asarray(_one_hot_videos()), jnp.asarray(LABELS)
    both = Mixing(K, mixup=0.8, cutmix=1.0, switch_prob=0.5, seed=3)
    kinds = [both.kind(step) for step in range(10)]
    assert set(kinds) == {"mixup", "cutmix"}
    for step, kind in enumerate(kinds):
        pixels = np.asarray(both(videos, labels, step)[0])
        assert np.isin(pixels, (0.0, 1.0)).all() == (kind == "cutmix"), (step, kind)
    assert Mixing(K, mixup=0.8).kind(0) == "mixup" and Mixing(K, cutmix=1.0).kind(0) == "cutmix"
    assert Mixing(K).kind(0) == "none"


def test_draws_depend_on_seed_and_step_only():
    videos, labels = jnp.asarray(_one_hot_videos()), jnp.asarray(LABELS)
    mixing = Mixing(K, mixup=0.8, cutmix=1.0, seed=3)
    first, again = mixing(videos, labels, 5)[1], mixing(videos, labels, 5)[1]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, mixing(videos, labels, 6)[1])
    assert not np.allclose(first, Mixing(K, mixup=0.8, cutmix=1.0, seed=4)(videos, labels, 5)[1])


def test_a_sharded_batch_mixes_as_one_array():
    """The pairing spans devices (the global batch reversed): 8 shards give what one does."""
    mesh = Mesh(np.array(jax.devices()[:8]), ("batch",))
    spec = NamedSharding(mesh, PartitionSpec("batch"))
    mixing = Mixing(K, mixup=0.8, cutmix=1.0, smoothing=0.1, seed=0)
    rng = np.random.default_rng(1)
    videos = rng.standard_normal((B, 2, 8, 8, 3)).astype(np.float32)
    for step in range(4):
        whole = mixing(jnp.asarray(videos), jnp.asarray(LABELS), step)
        sharded = jax.jit(mixing)(
            jax.device_put(videos, spec), jax.device_put(LABELS, spec), jnp.int32(step)
        )
        for a, b in zip(whole, sharded, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_label_smoothing():
    targets = np.asarray(smooth_one_hot(jnp.array([2, 0]), 4, 0.1))
    np.testing.assert_allclose(targets[0], [0.025, 0.025, 0.925, 0.025], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
