"""Device augmentation (`data.augment_on=device`): every RandAugment op in JAX against its host
(PIL) twin on fresh random clips and values, flip, normalisation and erasing against theirs,
and the per-clip draws from (seed, step, position in the global batch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmp_jax.data import device_augment, randaugment, resample, transforms

# Values each op takes (what its level gives at magnitudes in [0, 1], both signs where signed).
VALUES = {
    "AutoContrast": [0],
    "Equalize": [0],
    "Invert": [0],
    "Rotate": [-27.3, 11.0, 30.0],
    "PosterizeIncreasing": [1, 2, 4],
    "SolarizeIncreasing": [256, 150, 77],
    "SolarizeAdd": [0, 37, 110],
    "ColorIncreasing": [-0.9, 0.35, 0.9],
    "ContrastIncreasing": [-0.9, 0.35, 0.9],
    "BrightnessIncreasing": [-0.9, 0.35, 0.9],
    "SharpnessIncreasing": [-0.9, 0.35, 0.9],
    "ShearX": [-0.3, 0.13],
    "ShearY": [-0.3, 0.13],
    "TranslateXRel": [-0.45, 0.2],
    "TranslateYRel": [-0.45, 0.2],
}
IDENTITY = {("SolarizeIncreasing", 256), ("SolarizeAdd", 0)}  # values that change nothing
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def _clip(rng, t=2, h=30, w=38) -> np.ndarray:
    """Blocky random content plus a little noise, in a narrow value range (so autocontrast
    and equalize act, and histogram counts are not all multiples of the block size)."""
    small = rng.integers(40, 200, (t, h // 2 + 1, w // 2 + 1, 3))
    blocks = np.repeat(np.repeat(small, 2, 1), 2, 2)[:, :h, :w]
    return (blocks + rng.integers(0, 3, blocks.shape)).astype(np.uint8)


def _device(name, clip, value):
    op = device_augment.OPS[name][0]
    return np.asarray(jax.jit(op)(jnp.asarray(clip), value))


@pytest.mark.parametrize("name", randaugment.OPS)
def test_each_op_matches_its_host_twin(name, seed):
    assert set(VALUES) == set(randaugment.OPS)
    rng = np.random.default_rng(seed)
    for value in VALUES[name]:
        clip = _clip(rng)
        host = randaugment.apply_op(name, clip, value).astype(int)
        device = _device(name, clip, value).astype(int)
        assert device.shape == host.shape and device.dtype == host.dtype
        differ = host != device
        if name in GEOMETRIC:  # nearest sampling: a float32 coordinate can land across an edge
            assert differ.mean() < 0.01, (name, value, differ.mean())
        else:  # within rounding
            assert np.abs(host - device).max() <= 1 and differ.mean() < 0.01, (name, value)
        if (name, value) not in IDENTITY:
            assert (host != clip).any(), (name, value)  # the op did something to compare


def test_normalize_and_flip_match_the_host(seed):
    clip = _clip(np.random.default_rng(seed))
    np.testing.assert_allclose(
        device_augment.normalize(jnp.asarray(clip)), transforms.normalize(clip), rtol=1e-6
    )
    augment = device_augment.DeviceAugment(True, 0, 7.0, 0.5, 0.0, seed=3)
    flips = []
    for i in range(16):
        out = np.asarray(augment.clip(jnp.asarray(clip), jax.random.key(i)))
        flipped = np.allclose(out, transforms.normalize(clip[:, :, ::-1]), rtol=1e-6)
        assert flipped or np.allclose(out, transforms.normalize(clip), rtol=1e-6)
        flips.append(flipped)
    assert 0 < sum(flips) < 16


def test_random_erase_fills_one_box_on_every_frame(seed):
    clip = _clip(np.random.default_rng(seed), t=3, h=40, w=48)
    video = jnp.asarray(transforms.normalize(clip))
    sizes = []
    for i in range(20):
        out = np.asarray(device_augment.random_erase(video, jax.random.key(i), prob=1.0))
        changed = out != np.asarray(video)
        assert (changed == changed[0]).all()  # the same box on every frame
        rows, cols = np.nonzero(changed[0].any(-1))
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert changed[0].any(-1).sum() == box  # a rectangle
        sizes.append(box / (40 * 48))
        assert np.std(out[changed]) > 0.01 and abs(np.mean(out[changed])) < 0.5  # N(0, 1)
    assert min(sizes) > 0.02 * 0.8 and max(sizes) < 1 / 3 * 1.2
    untouched = device_augment.random_erase(video, jax.random.key(0), prob=0.0)
    np.testing.assert_array_equal(untouched, video)


def test_a_clips_draws_come_from_seed_step_and_position(seed):
    augment = device_augment.DeviceAugment(True, 2, 9.0, 0.5, 0.25, seed=5)
    rng = np.random.default_rng(seed)
    batch = jnp.asarray(np.stack([_clip(rng) for _ in range(4)]))
    out = np.asarray(jax.jit(augment)(batch, 7))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(5), 7), 2)
    np.testing.assert_array_equal(out[2], augment.clip(batch[2], key))
    np.testing.assert_array_equal(out, jax.jit(augment)(batch, 7))  # the same again
    assert not np.array_equal(out, jax.jit(augment)(batch, 8))  # another step, other draws
    assert out.dtype == np.float32 and out.shape == batch.shape


def test_resample_coefficients_are_pillows(seed):
    """One-axis resizes (one pass) equal Pillow's bit for bit, shrinking and growing; two-axis
    ones (columns first) within 1 (Pillow 13 takes the rows first for some size pairs)."""
    rng = np.random.default_rng(seed)
    for _ in range(12):
        h, w, out = (int(v) for v in rng.integers(9, 120, 3))
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        pil = transforms.crop_resize(image[None], (0, 0, h, w), (h, out))[0]
        np.testing.assert_array_equal(resample.resize(image, h, out), pil)
        pil = transforms.crop_resize(image[None], (0, 0, h, w), (out, w))[0]
        np.testing.assert_array_equal(resample.resize(image, out, w), pil)
        both = transforms.crop_resize(image[None], (0, 0, h, w), (out, out))[0].astype(int)
        assert np.abs(resample.resize(image, out, out).astype(int) - both).max() <= 1


def test_the_steps_crop_resize_is_the_hosts(seed):
    """A crop plan applied in JAX to frames on a canvas gives the host's crop and resize
    (`resample.resize` exactly, Pillow's `crop_resize` within 1)."""
    rng = np.random.default_rng(seed)
    canvas = (40, 56)
    frames = rng.integers(0, 256, (2, *canvas, 3), np.uint8)
    for _ in range(6):
        h, w = int(rng.integers(8, 41)), int(rng.integers(8, 57))
        top, left = int(rng.integers(0, 41 - h)), int(rng.integers(0, 57 - w))
        plan = resample.crop_plan((top, left, h, w), 24, canvas)
        out = np.asarray(jax.jit(device_augment.crop_resize)(jnp.asarray(frames), plan))
        crop = frames[:, top : top + h, left : left + w]
        np.testing.assert_array_equal(out, resample.resize(crop, 24, 24))
        pil = transforms.crop_resize(frames, (top, left, h, w), 24).astype(int)
        assert np.abs(out.astype(int) - pil).max() <= 1
