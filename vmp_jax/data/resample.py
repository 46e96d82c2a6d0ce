"""Pillow's bilinear resize as explicit fixed-point coefficients, computed on the host and
applied elsewhere (the train step, with data.augment_on=device: `device_augment.crop_resize`).

Pillow resizes in two passes; each output pixel of a pass is
clip8((2^21 + sum_k in[start + k] * coef[k]) >> 22), with integer coefficients of the triangle
filter (support max(1, in/out)) normalised per output pixel and rounded to 22 bits
(Pillow's Resample.c: precompute_coeffs, normalize_coeffs_8bpc, ImagingResample*_8bpc).
`coefficients` reproduces them exactly. `resize` applies them columns first, as Resample.c
does; Pillow 13 takes the rows first for some size pairs (when the rows shrink more), which
rounds the intermediate differently: the two then differ by at most 1 on some pixels.

A crop plan (`crop_plan`) is a box's two passes on a fixed canvas: rows_start int32 (S,),
rows_coef int32 (S, Kr), cols_start int32 (S,), cols_coef int32 (S, Kc), with Kr and Kc the
canvas' taps, so that every clip of a batch has the same shapes.
"""

import functools
import math

import numpy as np

PRECISION_BITS = 32 - 8 - 2


def taps(in_size: int, out_size: int) -> int:
    """The most coefficients one output pixel takes (Pillow's ksize)."""
    return int(math.ceil(max(in_size / out_size, 1.0))) * 2 + 1


@functools.lru_cache(maxsize=4096)
def coefficients(in_size: int, out_size: int, width: int | None = None):
    """(start int32 (out,), coef int32 (out, width)): output pixel i is the fixed-point sum of
    input pixels start[i] .. start[i] + width - 1 weighted by coef[i] (zeros past the taps).
    Pillow's loops, vectorised over the output pixels with the same float64 operations."""
    width = width or taps(in_size, out_size)
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the triangle filter's support is 1
    center = (np.arange(out_size) + 0.5) * scale  # (out,)
    lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C's (int) casts
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - lo
    if count.max() > width:
        raise ValueError(f"{count.max()} taps for {in_size} -> {out_size} exceed width {width}")
    x = np.arange(width)[None, :]  # (1, width)
    ss = 1.0 / filterscale
    w = np.maximum(1.0 - np.abs((x + lo[:, None] - center[:, None] + 0.5) * ss), 0.0)
    w = np.where(x < count[:, None], w, 0.0)  # (out, width)
    total = np.cumsum(w, axis=1)[:, -1:]  # summed in order, as the C loop
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = np.trunc(0.5 + w * (1 << PRECISION_BITS)).astype(np.int32)  # w >= 0
    return lo.astype(np.int32), fixed


def _pass(x: np.ndarray, start, coef, axis: int) -> np.ndarray:
    """One pass along `axis` of uint8 x; the other axes are kept."""
    x = np.moveaxis(x, axis, -1).astype(np.int64)
    index = np.minimum(start[:, None] + np.arange(coef.shape[1]), x.shape[-1] - 1)  # (out, K)
    acc = (x[..., index] * coef).sum(-1) + (1 << (PRECISION_BITS - 1))
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, -1, axis)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (..., H, W, C) -> (..., height, width, C): Pillow's BILINEAR, columns first."""
    h, w = image.shape[-3:-1]
    planes = np.moveaxis(image, -1, 0)  # (C, ..., H, W)
    for axis, size, out in ((-1, w, width), (-2, h, height)):
        if size != out:
            planes = _pass(planes, *coefficients(size, out), axis=axis)
    return np.moveaxis(planes, 0, -1)


def crop_plan(box, size: int, canvas: tuple[int, int]) -> dict[str, np.ndarray]:
    """The two passes that resize `box` (top, left, height, width) of a canvas to size x size."""
    top, left, h, w = box
    rows_start, rows_coef = coefficients(h, size, taps(canvas[0], size))
    cols_start, cols_coef = coefficients(w, size, taps(canvas[1], size))
    return {
        "rows_start": rows_start + np.int32(top),
        "rows_coef": rows_coef,
        "cols_start": cols_start + np.int32(left),
        "cols_coef": cols_coef,
    }


PLAN_KEYS = ("rows_start", "rows_coef", "cols_start", "cols_coef")


def plan_shapes(size: int, canvas: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """{key: shape} of `crop_plan`'s int32 arrays for a canvas (the same for every box)."""
    rows, cols = (size, taps(canvas[0], size)), (size, taps(canvas[1], size))
    return {"rows_start": rows[:1], "rows_coef": rows, "cols_start": cols[:1], "cols_coef": cols}


# data.canvas when it is None and the source is not a frame store: a 320 px short side up to 16:9.
DEFAULT_CANVAS = (320, 576)


def canvas_of(data, source=None) -> tuple[int, int]:
    """The (height, width) the loader places training frames on with data.augment_on=device:
    data.canvas if set; else a frame store's largest frames (`frame_size`), exactly, so that
    frames of that width decode straight onto it (`StoredVideo.read_onto`); else
    DEFAULT_CANVAS; never under data.img_size."""
    if data.canvas is not None:
        return tuple(data.canvas)
    size = getattr(source, "frame_size", None) or DEFAULT_CANVAS
    return tuple(max(data.img_size, n) for n in size)
