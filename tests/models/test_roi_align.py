"""ROIAlign (SPEC section 8) against a loop written from the SPEC's text, hand-computed cases,
the gradient by finite differences, and jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from vmp_jax.models import roi_align

# one compiled program per shape and setting: eager mode's op-by-op dispatch is slower on CPU
STATIC = ("output_size", "spatial_scale", "sampling_ratio", "aligned", "max_grid")
roi_align_jit = jax.jit(roi_align, static_argnames=STATIC)


def _bilinear(f, y, x):
    """SPEC: a sample with y < -1 or y > H (likewise x) adds 0; otherwise coordinates below 0
    read 0 and those at or beyond H - 1 read row H - 1."""
    h, w, _ = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * f[y0, x0]
        + (1 - ly) * lx * f[y0, x1]
        + ly * (1 - lx) * f[y1, x0]
        + ly * lx * f[y1, x1]
    )


def reference(features, boxes, out, scale, sampling_ratio, aligned):
    """SPEC section 8 as loops, one box, one bin, one sample at a time (float64)."""
    features, boxes = np.asarray(features, np.float64), np.asarray(boxes, np.float64)
    bsz, k = boxes.shape[:2]
    result = np.zeros((bsz, k, out, out, features.shape[-1]))
    offset = 0.5 if aligned else 0.0
    for b in range(bsz):
        for i in range(k):
            x1, y1, x2, y2 = boxes[b, i] * scale - offset
            rh, rw = y2 - y1, x2 - x1
            if not aligned:
                rh, rw = max(rh, 1.0), max(rw, 1.0)
            bh, bw = rh / out, rw / out
            gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / out)
            gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / out)
            count = max(gh * gw, 1)
            for ph in range(out):
                for pw in range(out):
                    acc = np.zeros(features.shape[-1])
                    for iy in range(gh):
                        y = y1 + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + pw * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear(features[b], y, x)
                    result[b, i, ph, pw] = acc / count
    return result


def _random_boxes(rng, bsz, k, height, width):
    """Boxes in input pixels on a height x width input: inside, partly outside, tiny, empty;
    no side longer than min(height, width), so adaptive sampling stays within its static grid
    (roi_align's docstring)."""
    side = min(height, width)
    x1 = rng.uniform(-0.2 * width, width, (bsz, k))
    y1 = rng.uniform(-0.2 * height, height, (bsz, k))
    w, h = rng.uniform(0, side, (2, bsz, k))
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=-1)
    boxes[:, 0] = [3.0, 5.0, 3.4, 5.3]  # tiny: under one cell
    boxes[:, 1] = [8.0, 8.0, 8.0, 8.0]  # empty
    return boxes.astype(np.float32)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_the_spec_loop(seed, aligned, sampling_ratio):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)  # a 36 x 44 px input at 1/4
    boxes = _random_boxes(rng, 2, 6, 36, 44)
    got = roi_align_jit(features, boxes, 3, 0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    want = reference(features, boxes, 3, 0.25, sampling_ratio, aligned)
    assert got.shape == (2, 6, 3, 3, 3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def _ramp(h=4, w=5):
    """f[y, x] = 10 y + x, one channel: bilinear samples read back their coordinates."""
    y, x = np.mgrid[:h, :w]
    return (10.0 * y + x)[None, :, :, None].astype(np.float32)


def _one(features, box, out=1, scale=1.0, sampling_ratio=1, aligned=False):
    boxes = np.asarray(box, np.float32)[None, None]
    got = roi_align_jit(features, boxes, out, scale, sampling_ratio=sampling_ratio, aligned=aligned)
    return np.asarray(got)[0, 0]


def test_one_pixel_box():
    f = _ramp()
    # aligned: the box [x, x+1) samples the pixel centre x exactly
    assert _one(f, [2, 1, 3, 2], aligned=True)[0, 0, 0] == pytest.approx(12.0)
    # not aligned: the sample sits half a pixel further, between four pixels
    assert _one(f, [2, 1, 3, 2], aligned=False)[0, 0, 0] == pytest.approx(17.5)


def test_tiny_box_is_clamped_to_one_pixel_unless_aligned():
    f = _ramp()
    # not aligned: sides clamped to 1, so a 0.2-pixel box samples as the 1-pixel one
    assert _one(f, [2, 1, 2.2, 1.2])[0, 0, 0] == pytest.approx(17.5)
    # aligned: no clamp, the sample is the tiny box's own centre (2.1 - 0.5, 1.1 - 0.5)
    assert _one(f, [2, 1, 2.2, 1.2], aligned=True)[0, 0, 0] == pytest.approx(6.0 + 1.6)
    # aligned and empty: adaptive sampling has no samples, the bin reads 0
    assert _one(f, [2, 1, 2, 1], sampling_ratio=0, aligned=True)[0, 0, 0] == 0.0


def test_borders():
    f = _ramp()  # H = 4, W = 5
    # samples at or past the last row/column read it (x = 4.5 <= W reads column 4)
    assert _one(f, [4, 3, 5, 4])[0, 0, 0] == pytest.approx(34.0)
    # between -1 and 0 reads 0 (clamped): x = -0.5, y = -0.5 read f[0, 0]
    assert _one(f, [-1, -1, 0, 0])[0, 0, 0] == pytest.approx(0.0 + 0.0)
    assert _one(f + 1.0, [-1, -1, 0, 0])[0, 0, 0] == pytest.approx(1.0)


def test_partly_outside_counts_the_outside_samples_as_zeros():
    f = np.ones((1, 4, 4, 1), np.float32)
    # a box from x = 2 to 6 on a 4-wide map, 1 bin, adaptive 4 x 2 samples: x = 2.5 .. 5.5;
    # 2.5, 3.5 read 1, 4.5 and 5.5 are past W = 4: they add 0 but count
    assert _one(f, [2, 0, 6, 2], sampling_ratio=0)[0, 0, 0] == pytest.approx(0.5)
    # fixed 3 x 3: x = 2.67, 4.0 (= W: still read, as column 3), 5.33 (outside)
    assert _one(f, [2, 0, 6, 2], sampling_ratio=3)[0, 0, 0] == pytest.approx(2 / 3)


def test_adaptive_grid_counts_per_box():
    f = _ramp(8, 8)
    # a 4 x 2 box into 2 x 2 bins: adaptive grid 2 x 1 per bin
    got = _one(f, [0, 0, 2, 4], out=2, sampling_ratio=0)[..., 0]
    # bin (0, 0): y in {0.5, 1.5}, x = 0.5 -> mean 10 * 1 + 0.5
    np.testing.assert_allclose(got, [[10.5, 11.5], [30.5, 31.5]], rtol=1e-6)


def test_a_taller_box_than_the_static_grid_samples_as_the_fixed_maximum():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    box = [[[-4.0, -5.0, 11.0, 12.0]]]  # 17 cells tall on a 6-cell map, 2 bins: grid 9 > 3
    got = roi_align_jit(f, np.float32(box), 2, 1.0, sampling_ratio=0)
    np.testing.assert_allclose(got, reference(f, box, 2, 1.0, 3, False), rtol=1e-5, atol=1e-6)
    exact = roi_align_jit(f, np.float32(box), 2, 1.0, sampling_ratio=0, max_grid=9)
    np.testing.assert_allclose(exact, reference(f, box, 2, 1.0, 0, False), rtol=1e-5, atol=1e-6)


def test_gradient_by_finite_differences(seed):
    rng = np.random.default_rng(seed)
    features = jnp.asarray(rng.normal(size=(1, 5, 6, 2)), jnp.float32)
    boxes = jnp.asarray(_random_boxes(rng, 1, 3, 20, 24))
    fn = jax.jit(lambda f: roi_align(f, boxes, 2, 0.25, -1, False))
    check_grads(fn, (features,), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


def test_jit_compiles_once_for_any_boxes(seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
    traces = []

    def fn(f, b):
        traces.append(1)
        return roi_align(f, b, 7, 0.25)

    fn = jax.jit(fn)
    for _ in range(2):  # other boxes, other adaptive grid counts: the same program
        boxes = _random_boxes(rng, 2, 5, 28, 28)
        want = reference(features, boxes, 7, 0.25, -1, False)
        np.testing.assert_allclose(fn(features, boxes), want, rtol=1e-4, atol=1e-5)
    assert len(traces) == 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="boxes"):
        roi_align(np.zeros((1, 4, 4, 1)), np.zeros((1, 4)), 2, 1.0)


def test_compiled_memory_is_linear_in_the_boxes():
    """Temp memory of the compiled op for K and 4K boxes on a 14 x 14 map (AVA's head): about
    4x, and below the dense per-sample bilinear weights (K, 14 samples, 14 samples, H, W) that
    a non-separable formulation would hold."""
    features = jax.ShapeDtypeStruct((1, 14, 14, 64), jnp.float32)

    def temp(k):
        boxes = jax.ShapeDtypeStruct((1, k, 4), jnp.float32)
        fn = jax.jit(lambda f, b: roi_align(f, b, 7, 1 / 16))
        return fn.lower(features, boxes).compile().memory_analysis().temp_size_in_bytes

    small, large = temp(16), temp(64)
    assert large <= 4.5 * max(small, 1)
    assert large < 64 * 14 * 14 * 14 * 14 * 4
