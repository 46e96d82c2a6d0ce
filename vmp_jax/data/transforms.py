"""Clip transforms: every random choice is made once per clip and applied to all its frames.

Train: random resized crop (VideoMamba) or multi-scale crop (VideoMAE/TSN), horizontal flip,
RandAugment (randaugment.py), normalisation, random erasing; then, on whole batches, mixup or
cutmix with label smoothing. Eval: short-side resize and 1 or 3 crops along the long side.

Arrays: clips are uint8 (T, H, W, 3) until `normalize`, float32 after; batches (B, T, H, W, 3).
"""

import math

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255  # ImageNet, as VideoMamba
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
CROPS = ("random_resized", "multi_scale")

Box = tuple[int, int, int, int]  # (top, left, height, width)


def random_resized_box(
    h: int, w: int, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10
) -> Box:
    """torchvision's RandomResizedCrop box: area fraction in `scale`, log-uniform aspect ratio
    in `ratio`; falls back to the largest centred box within `ratio`."""
    area = h * w
    log_ratio = np.log(ratio)
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1)), ch, cw
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif aspect > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


# VideoMAE's "more fix crop" positions, in quarters of the free space (top, left).
_FIXED_OFFSETS = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2)]
_FIXED_OFFSETS += [(1, 1), (1, 3), (3, 1), (3, 3)]


def multi_scale_box(h: int, w: int, rng, scales=(1.0, 0.875, 0.75, 0.66), max_distort=1) -> Box:
    """VideoMAE's GroupMultiScaleCrop box: side lengths from `scales` x the short side, the two
    scales at most `max_distort` steps apart, at one of 13 fixed positions (corners, centre, ...).
    """
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    pairs = [
        (ch, cw)
        for i, ch in enumerate(sizes)
        for j, cw in enumerate(sizes)
        if abs(i - j) <= max_distort
    ]
    ch, cw = pairs[rng.integers(len(pairs))]
    sy, sx = (h - ch) / 4, (w - cw) / 4
    a, b = _FIXED_OFFSETS[rng.integers(len(_FIXED_OFFSETS))]
    return int(sy * a), int(sx * b), ch, cw


def crop_resize(video: np.ndarray, box: Box, size: int | tuple[int, int]) -> np.ndarray:
    """Crops `box` from every frame and resizes it (bilinear) to `size` (square or (h, w))."""
    top, left, ch, cw = box
    out_h, out_w = (size, size) if isinstance(size, int) else size
    crop = video[:, top : top + ch, left : left + cw]
    if (ch, cw) == (out_h, out_w):
        return np.ascontiguousarray(crop)
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.Resampling.BILINEAR))
            for f in crop
        ]
    )


def resize_short_side(video: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, H', W', 3) with min(H', W') = size, aspect kept."""
    _, h, w, _ = video.shape
    if min(h, w) == size:
        return video
    scale = size / min(h, w)
    new = (max(size, int(round(h * scale))), max(size, int(round(w * scale))))
    return crop_resize(video, (0, 0, h, w), new)


def eval_crops(video: np.ndarray, size: int, num_crops: int) -> np.ndarray:
    """(T, H, W, 3) with short side `size` -> (num_crops, T, size, size, 3): the centre crop,
    or 3 crops at the start, centre and end of the long side (VideoMAE's test protocol)."""
    _, h, w, _ = video.shape
    if num_crops not in (1, 3):
        raise ValueError(f"eval.num_crops must be 1 or 3, got {num_crops}")
    fractions = (0.5,) if num_crops == 1 else (0.0, 0.5, 1.0)
    crops = []
    for f in fractions:
        top, left = int(round((h - size) * f)), int(round((w - size) * f))
        if h > w:
            left = (w - size) // 2
        else:
            top = (h - size) // 2
        crops.append(video[:, top : top + size, left : left + size])
    return np.stack(crops)


def normalize(video: np.ndarray) -> np.ndarray:
    """uint8 -> float32 with ImageNet mean and std per channel."""
    out = video.astype(np.float32)  # one new array, the arithmetic in place (memory-bound)
    out -= MEAN
    out /= STD
    return out


def random_erase(video: np.ndarray, prob: float, rng, area=(0.02, 1 / 3), log_ratio=0.3):
    """timm's RandomErasing in pixel mode on a normalised clip: with probability `prob`, one box
    (the same on every frame) is filled with standard-normal noise. Returns a new array."""
    if prob <= 0 or rng.random() >= prob:
        return video
    t, h, w, c = video.shape
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(math.log(log_ratio), -math.log(log_ratio)))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if eh < h and ew < w:
            top, left = rng.integers(h - eh + 1), rng.integers(w - ew + 1)
            video = video.copy()
            noise = rng.standard_normal((t, eh, ew, c), dtype=np.float32)
            video[:, top : top + eh, left : left + ew] = noise
            return video
    return video
