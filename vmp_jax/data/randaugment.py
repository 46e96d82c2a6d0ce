"""RandAugment for clips: timm's "rand-m{M}-n{N}-mstd{S}-inc1" policy, one draw per clip.

Each of the N layers picks an op at random, applies it with probability 1/2, at a magnitude drawn
from N(M, S) clipped to [0, 10] (signed ops flip sign with probability 1/2); the same op and
magnitude are applied to every frame, so the clip stays temporally consistent. "inc1": the
magnitude-increasing variants of posterize, solarize and the enhance ops, as VideoMAE and
VideoMamba use. Frames are PIL images, as in timm, so the ops match it pixel for pixel.
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
_FILL = (128, 128, 128)


def _affine(frames, matrix):
    return [f.transform(f.size, Image.Transform.AFFINE, matrix, fillcolor=_FILL) for f in frames]


def _enhance(kind):
    def op(frames, v):
        return [kind(f).enhance(1.0 + v) for f in frames]

    return op


def _solarize_add(frames, add):
    out = []
    for f in frames:
        a = np.asarray(f).astype(np.int16)
        out.append(Image.fromarray(np.where(a < 128, np.minimum(a + add, 255), a).astype(np.uint8)))
    return out


# name -> (op(frames, value), value from magnitude in [0, 1], signed)
_OPS = {
    "AutoContrast": (lambda fs, v: [ImageOps.autocontrast(f) for f in fs], lambda m: 0, False),
    "Equalize": (lambda fs, v: [ImageOps.equalize(f) for f in fs], lambda m: 0, False),
    "Invert": (lambda fs, v: [ImageOps.invert(f) for f in fs], lambda m: 0, False),
    "Rotate": (lambda fs, v: [f.rotate(v, fillcolor=_FILL) for f in fs], lambda m: 30 * m, True),
    "PosterizeIncreasing": (
        lambda fs, v: [ImageOps.posterize(f, v) for f in fs],
        lambda m: max(1, 4 - int(4 * m)),  # PIL keeps at least 1 bit
        False,
    ),
    "SolarizeIncreasing": (
        lambda fs, v: [ImageOps.solarize(f, v) for f in fs],
        lambda m: 256 - int(256 * m),
        False,
    ),
    "SolarizeAdd": (_solarize_add, lambda m: int(110 * m), False),
    "ColorIncreasing": (_enhance(ImageEnhance.Color), lambda m: 0.9 * m, True),
    "ContrastIncreasing": (_enhance(ImageEnhance.Contrast), lambda m: 0.9 * m, True),
    "BrightnessIncreasing": (_enhance(ImageEnhance.Brightness), lambda m: 0.9 * m, True),
    "SharpnessIncreasing": (_enhance(ImageEnhance.Sharpness), lambda m: 0.9 * m, True),
    "ShearX": (lambda fs, v: _affine(fs, (1, v, 0, 0, 1, 0)), lambda m: 0.3 * m, True),
    "ShearY": (lambda fs, v: _affine(fs, (1, 0, 0, v, 1, 0)), lambda m: 0.3 * m, True),
    "TranslateXRel": (
        lambda fs, v: _affine(fs, (1, 0, v * fs[0].size[0], 0, 1, 0)),
        lambda m: 0.45 * m,
        True,
    ),
    "TranslateYRel": (
        lambda fs, v: _affine(fs, (1, 0, 0, 0, 1, v * fs[0].size[1])),
        lambda m: 0.45 * m,
        True,
    ),
}
OPS = tuple(_OPS)


def apply_op(name: str, video: np.ndarray, value) -> np.ndarray:
    """One op of OPS at `value` (what its level gives), on every frame: uint8 (T, H, W, 3)."""
    frames = _OPS[name][0]([Image.fromarray(f) for f in video], value)
    return np.stack([np.asarray(f) for f in frames])


def rand_augment(
    video: np.ndarray, num_layers: int, magnitude: float, magnitude_std: float, rng
) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, H, W, 3), one random policy for the whole clip."""
    if num_layers <= 0:
        return video
    frames = [Image.fromarray(f) for f in video]
    for _ in range(num_layers):
        name = OPS[rng.integers(len(OPS))]
        if rng.random() >= 0.5:
            continue
        m = magnitude if magnitude_std <= 0 else rng.normal(magnitude, magnitude_std)
        m = float(np.clip(m, 0.0, MAX_LEVEL)) / MAX_LEVEL
        op, level, signed = _OPS[name]
        value = level(m)
        if signed and rng.random() < 0.5:
            value = -value
        frames = op(frames, value)
    return np.stack([np.asarray(f) for f in frames])
