"""The training clips' augmentation in JAX, inside the jitted train step (`data.augment_on=device`).

The host then only reads, decodes and decides the crop: it hands the decoded frames on a fixed
canvas (uint8, `resample.canvas_of`) with the crop box's resize as Pillow's fixed-point coefficients
(`resample.crop_plan`); the crop's resize, flip, RandAugment, normalisation and random erasing
run here, on the global batch.
Each op is the twin of the host's (`randaugment`, `transforms`, PIL's formulas: the same luma,
blends in float32 truncated to uint8, SMOOTH's rounding and copied border, nearest-neighbour
affine maps sampled at pixel centres with grey fill), agreeing within rounding (tests per op).

A clip's draws come from (seed, optimiser step, its position in the global batch), as mixup's
do, so a run gives the same batches for any host and worker count and a resumed run continues
as the uninterrupted one did. Under `vmap` a drawn op is a select over all 15 ops (each clip
computes every op once per layer): cheap on an accelerator, a choice that keeps the step one
program.

Arrays: a clip is uint8 (T, H, W, 3) until `normalize`; batches (B, T, H, W, 3).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from vmp_jax.data import randaugment, resample, transforms

FILL = 128  # the affine maps' fill, as the host's (timm's) grey


def _u8(x) -> jax.Array:
    return jnp.clip(x, 0, 255).astype(jnp.uint8)  # truncates, as PIL's (UINT8) casts


def _blend(degenerate, clip, factor) -> jax.Array:
    """PIL's Image.blend(degenerate, clip, factor): d + factor (c - d) in float32, truncated."""
    d, c = degenerate.astype(jnp.float32), clip.astype(jnp.float32)
    return _u8(d + jnp.float32(factor) * (c - d))


def luma(clip) -> jax.Array:
    """PIL's convert("L"): int32 (..., H, W) = (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    x = clip.astype(jnp.int32)
    return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def color(clip, factor):
    return _blend(jnp.repeat(luma(clip)[..., None], 3, -1), clip, factor)


def contrast(clip, factor):
    """Blends each frame with its mean grey, rounded as ImageEnhance.Contrast does."""
    mean = jnp.floor(luma(clip).mean(axis=(-2, -1), dtype=jnp.float32) + 0.5)  # (T,)
    return _blend(jnp.broadcast_to(mean[:, None, None, None], clip.shape), clip, factor)


def brightness(clip, factor):
    return _blend(jnp.zeros_like(clip), clip, factor)


def smooth(clip) -> jax.Array:
    """PIL's ImageFilter.SMOOTH: 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; the border
    pixels copied."""
    x = clip.astype(jnp.int32)
    _, h, w, _ = x.shape
    total = sum(x[:, i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    inner = total + 4 * x[:, 1:-1, 1:-1]  # the centre's weight 5
    rounded = jnp.floor(inner.astype(jnp.float32) / 13 + 0.5).astype(jnp.uint8)
    return clip.at[:, 1:-1, 1:-1].set(rounded)


def sharpness(clip, factor):
    return _blend(smooth(clip), clip, factor)


def invert(clip, _=None):
    return 255 - clip


def posterize(clip, bits):
    """Keeps the top `bits` bits."""
    mask = (0xFF << (8 - jnp.asarray(bits, jnp.int32))) & 0xFF
    return (clip.astype(jnp.int32) & mask).astype(jnp.uint8)


def solarize(clip, threshold):
    return jnp.where(clip.astype(jnp.int32) < threshold, clip, 255 - clip)  # threshold: 1..256


def solarize_add(clip, add):
    x = clip.astype(jnp.int32)
    return _u8(jnp.where(x < 128, jnp.minimum(x + add, 255), x))


def _per_frame_channel(fn, clip):
    """fn over each (H, W) plane of a (T, H, W, 3) clip."""
    planes = jnp.moveaxis(clip, -1, 1)  # (T, 3, H, W)
    return jnp.moveaxis(jax.vmap(jax.vmap(fn))(planes), 1, -1)


def _autocontrast_plane(x):
    lo, hi = x.min().astype(jnp.float32), x.max().astype(jnp.float32)
    scale = jnp.float32(255.0) / jnp.maximum(hi - lo, 1)
    stretched = _u8(jnp.trunc(x.astype(jnp.float32) * scale - lo * scale))
    return jnp.where(hi <= lo, x, stretched)


def autocontrast(clip, _=None):
    """ImageOps.autocontrast per frame and channel: [min, max] stretched to [0, 255]."""
    return _per_frame_channel(_autocontrast_plane, clip)


def _equalize_plane(x):
    counts = jnp.zeros(256, jnp.int32).at[x.ravel()].add(1)  # (256,)
    last = counts[x.max()]  # the highest non-empty bin's count
    step = (x.size - last) // 255
    below = jnp.cumsum(counts) - counts  # pixels under each value
    lut = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255).astype(jnp.uint8)
    return jnp.where((step == 0) | (jnp.sum(counts > 0) <= 1), x, lut[x])


def equalize(clip, _=None):
    """ImageOps.equalize per frame and channel."""
    return _per_frame_channel(_equalize_plane, clip)


def affine(clip, matrix):
    """PIL's Image.transform(AFFINE, matrix, NEAREST, fillcolor=grey): output pixel (x, y) takes
    the input at floor(a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f), or the fill
    outside the frame."""
    a, b, c, d, e, f = matrix
    _, h, w, _ = clip.shape
    y, x = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")  # (H, W)
    sx, sy = jnp.floor(a * x + b * y + c), jnp.floor(d * x + e * y + f)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    xi, yi = jnp.clip(sx, 0, w - 1).astype(jnp.int32), jnp.clip(sy, 0, h - 1).astype(jnp.int32)
    return jnp.where(inside[None, :, :, None], clip[:, yi, xi], jnp.uint8(FILL))


def rotate(clip, degrees):
    """PIL's Image.rotate(degrees) about the centre, nearest, grey fill."""
    _, h, w, _ = clip.shape
    angle = -jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    cx, cy = w / 2.0, h / 2.0
    return affine(clip, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


def shear_x(clip, v):
    return affine(clip, (1.0, v, 0.0, 0.0, 1.0, 0.0))


def shear_y(clip, v):
    return affine(clip, (1.0, 0.0, 0.0, v, 1.0, 0.0))


def translate_x(clip, v):
    return affine(clip, (1.0, 0.0, v * clip.shape[2], 0.0, 1.0, 0.0))


def translate_y(clip, v):
    return affine(clip, (1.0, 0.0, 0.0, 0.0, 1.0, v * clip.shape[1]))


def _enhance(op):
    return lambda clip, v: op(clip, 1.0 + v)


# name (as randaugment.OPS) -> (op(clip, value), value from magnitude m in [0, 1], signed): the
# host's levels, with floor for Python's int() (m >= 0).
OPS = {
    "AutoContrast": (autocontrast, lambda m: 0.0, False),
    "Equalize": (equalize, lambda m: 0.0, False),
    "Invert": (invert, lambda m: 0.0, False),
    "Rotate": (rotate, lambda m: 30 * m, True),
    "PosterizeIncreasing": (posterize, lambda m: jnp.maximum(1, 4 - jnp.floor(4 * m)), False),
    "SolarizeIncreasing": (solarize, lambda m: 256 - jnp.floor(256 * m), False),
    "SolarizeAdd": (solarize_add, lambda m: jnp.floor(110 * m), False),
    "ColorIncreasing": (_enhance(color), lambda m: 0.9 * m, True),
    "ContrastIncreasing": (_enhance(contrast), lambda m: 0.9 * m, True),
    "BrightnessIncreasing": (_enhance(brightness), lambda m: 0.9 * m, True),
    "SharpnessIncreasing": (_enhance(sharpness), lambda m: 0.9 * m, True),
    "ShearX": (shear_x, lambda m: 0.3 * m, True),
    "ShearY": (shear_y, lambda m: 0.3 * m, True),
    "TranslateXRel": (translate_x, lambda m: 0.45 * m, True),
    "TranslateYRel": (translate_y, lambda m: 0.45 * m, True),
}
if tuple(OPS) != randaugment.OPS:
    raise AssertionError("device_augment.OPS must list the host's ops in the host's order")


def _apply_op(index, clip, m, negate):
    """The op at `index` of OPS at magnitude m (in [0, 1]), its value negated if `negate` and
    the op is signed."""

    def branch(name):
        op, level, signed = OPS[name]

        def run(clip):
            value = level(m)
            return op(clip, jnp.where(negate, -value, value) if signed else value)

        return run

    return jax.lax.switch(index, [branch(name) for name in OPS], clip)


def rand_augment(clip, key, num_layers: int, magnitude: float, magnitude_std: float):
    """timm's rand-m{M}-n{N}-mstd{S}-inc1 on one clip: per layer an op drawn uniformly, applied
    with probability 1/2, at magnitude N(M, S) clipped to [0, 10], signed ops negated with
    probability 1/2; the same op and magnitude on every frame."""
    for layer in range(num_layers):
        k_op, k_apply, k_mag, k_sign = jax.random.split(jax.random.fold_in(key, layer), 4)
        index = jax.random.randint(k_op, (), 0, len(OPS))
        m = jnp.float32(magnitude)
        if magnitude_std > 0:
            m = m + magnitude_std * jax.random.normal(k_mag)
        m = jnp.clip(m, 0.0, randaugment.MAX_LEVEL) / randaugment.MAX_LEVEL
        negate = jax.random.uniform(k_sign) < 0.5
        changed = _apply_op(index, clip, m, negate)
        clip = jnp.where(jax.random.uniform(k_apply) < 0.5, changed, clip)
    return clip


def _resample(x, start, coef, axis: int):
    """One of Pillow's fixed-point passes along `axis` (1: rows, 2: columns) of uint8 x
    (T, H, W, 3): output i sums x[start[i] + k] * coef[i, k] over the taps k."""
    size = x.shape[axis]
    acc = jnp.full((), 1 << (resample.PRECISION_BITS - 1), jnp.int32)
    for k in range(coef.shape[1]):  # a few taps: one gather and multiply-add each
        taken = jnp.take(x, jnp.minimum(start + k, size - 1), axis=axis).astype(jnp.int32)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        acc = acc + taken * coef[:, k].reshape(shape)
    return jnp.clip(acc >> resample.PRECISION_BITS, 0, 255).astype(jnp.uint8)


def crop_resize(canvas, plan: dict) -> jax.Array:
    """uint8 (T, Hc, Wc, 3) canvas -> uint8 (T, S, S, 3): the host's crop box resized as
    transforms.crop_resize does (Pillow's bilinear, columns first; `resample`)."""
    cols = _resample(canvas, plan["cols_start"], plan["cols_coef"], axis=2)  # (T, Hc, S, 3)
    return _resample(cols, plan["rows_start"], plan["rows_coef"], axis=1)  # (T, S, S, 3)


def normalize(clip) -> jax.Array:
    """uint8 -> float32 with ImageNet mean and std per channel (transforms.normalize)."""
    return (clip.astype(jnp.float32) - transforms.MEAN) / transforms.STD


def random_erase(video, key, prob: float, area=(0.02, 1 / 3), log_ratio=0.3, attempts=10):
    """timm's RandomErasing in pixel mode on a normalised clip (transforms.random_erase): with
    probability `prob`, the first of `attempts` random boxes that fits is filled with
    standard-normal noise, the same box on every frame."""
    t, h, w, c = video.shape
    k_do, k_area, k_aspect, k_top, k_left, k_noise = jax.random.split(key, 6)
    target = h * w * jax.random.uniform(k_area, (attempts,), minval=area[0], maxval=area[1])
    bound = -math.log(log_ratio)
    aspect = jnp.exp(jax.random.uniform(k_aspect, (attempts,), minval=-bound, maxval=bound))
    eh = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    ew = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    fits = (eh < h) & (ew < w)
    pick = jnp.argmax(fits)  # the first box that fits
    eh, ew = eh[pick], ew[pick]
    top = jax.random.randint(k_top, (), 0, h - eh + 1)
    left = jax.random.randint(k_left, (), 0, w - ew + 1)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)  # (H, W)
    erase = (jax.random.uniform(k_do) < prob) & fits.any()
    noise = jax.random.normal(k_noise, video.shape, video.dtype)
    return jnp.where(erase & box[None, :, :, None], noise, video)


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
    """The data section's flip, RandAugment and erasing settings, applied to a global batch."""

    flip: bool
    randaug_n: int
    randaug_m: float
    randaug_mstd: float
    erase_prob: float
    seed: int

    @classmethod
    def for_config(cls, config) -> "DeviceAugment | None":
        """The config's augmentation with data.augment_on=device; None with host."""
        d = config.data
        if d.augment_on != "device":
            return None
        return cls(d.flip, d.randaug_n, d.randaug_m, d.randaug_mstd, d.erase_prob, config.seed + 2)

    def clip(self, clip, key) -> jax.Array:
        """uint8 (T, S, S, 3) -> float32 (T, S, S, 3), as pipeline.augment_clip on the host."""
        k_flip, k_aug, k_erase = jax.random.split(key, 3)
        if self.flip:
            clip = jnp.where(jax.random.uniform(k_flip) < 0.5, clip[:, :, ::-1], clip)
        clip = rand_augment(clip, k_aug, self.randaug_n, self.randaug_m, self.randaug_mstd)
        return random_erase(normalize(clip), k_erase, self.erase_prob)

    def __call__(self, video, step, plan: dict | None = None) -> jax.Array:
        """uint8 (B, T, S, S, 3), or canvases (B, T, Hc, Wc, 3) with their crop plans (each
        array (B, ...); `resample.crop_plan`), the optimiser step -> float32 (B, T, S, S, 3);
        clip i's draws from (seed, step, i)."""
        if plan is not None:
            video = jax.vmap(crop_resize)(video, plan)
        key = jax.random.fold_in(jax.random.key(self.seed), step)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(video.shape[0]))
        return jax.vmap(self.clip)(video, keys)
