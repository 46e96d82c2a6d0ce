"""ROIAlign with `torchvision.ops.roi_align`'s semantics (SPEC section 8), as matrix products.

Each box (x1, y1, x2, y2 in input pixels, times `spatial_scale`) is split into out_h x out_w
bins; a bin averages bilinear samples of the feature map taken on a regular grid inside it.
Everything in that definition factorises over the two axes:
- bilinear interpolation at (y, x) is a tensor product: sum_r sum_c wy(r) wx(c) F[r, c], with
  wy(r) = max(0, 1 - |clip(y, 0, H-1) - r|) (torchvision's "coordinates below 0 read 0,
  those at or beyond H-1 read row H-1"), likewise wx;
- a sample adds 0 (but counts) when y < -1 or y > H, or x < -1 or x > W: the validity is the
  product of a y-part and an x-part;
- a bin's grid is the product of gy rows and gx columns of sample coordinates.
So a bin's average is Ay[p] (x) Ax[q] applied to F, divided by max(gy * gx, 1), where
Ay[k, p, :] (length H) sums the valid samples' row weights of bin row p, and Ax likewise. The
output is two contractions, einsum('bkph,bhwc->bkpwc') then with Ax over w: gathers and their
scatter-add gradients are replaced by matmuls (the MXU's and tensor cores' op, and the backward
pass is a matmul too). Memory is linear in the number of boxes K: the weights are
(B, K, out_h, G, H) and (B, K, out_w, G, W) (G the grid per bin, G * out_h ~ H), the
intermediate (B, K, out_h, W, C); nothing is (K, H, W) per sample point.

Static shapes. With `sampling_ratio` s > 0 every bin has s x s samples. With s <= 0
(adaptive) a box gets gy = ceil(roi_h / out_h) rows per bin, a number that depends on the box:
here the grid has a static maximum G = ceil(H / out_h) (likewise for x) and the sample rows
past gy are masked out. A box whose scaled height is at most G * out_h (>= H: any box inside
the feature map, and boxes sticking out by up to G * out_h - H) is sampled exactly as
torchvision does; a taller box gets G rows per bin, i.e. the result of a fixed sampling ratio G
on that axis (torchvision would use more, mostly outside the map). `max_grid` overrides G.

The boxes get no gradient (stop_gradient), as in torchvision; the features do.
"""

import math

import jax
import jax.numpy as jnp


def _axis_weights(start, size, bins: int, grid, max_grid: int, length: int):
    """Per-bin summed interpolation weights along one axis.

    Args:
      start, size: (B, K) the box's scaled start and extent on this axis.
      bins: out_h (or out_w).
      grid: (B, K) samples per bin on this axis (may be <= 0: no samples).
      max_grid: the static number of sample slots per bin.
      length: H (or W) of the feature map.

    Returns:
      (B, K, bins, length): sum over the bin's valid samples of their bilinear weights.
    """
    bin_size = size / bins  # (B, K)
    p = jnp.arange(bins, dtype=start.dtype)[:, None]  # (bins, 1)
    i = jnp.arange(max_grid, dtype=start.dtype)[None, :]  # (1, G)
    g = jnp.maximum(grid, 1).astype(start.dtype)[..., None, None]  # (B, K, 1, 1)
    coord = (
        start[..., None, None]
        + p * bin_size[..., None, None]
        + (i + 0.5) * bin_size[..., None, None] / g
    )  # (B, K, bins, G)
    used = i < grid[..., None, None]  # (B, K, 1, G): slots past the box's grid count masked
    inside = (coord >= -1.0) & (coord <= length)  # torchvision: outside adds 0 but counts
    clamped = jnp.clip(coord, 0.0, length - 1)  # below 0 reads 0; at/after H-1 reads row H-1
    rows = jnp.arange(length, dtype=start.dtype)  # (length,)
    hat = jnp.maximum(0.0, 1.0 - jnp.abs(clamped[..., None] - rows))  # (B, K, bins, G, length)
    keep = (used & inside)[..., None]
    return jnp.sum(jnp.where(keep, hat, 0.0), axis=-2)  # (B, K, bins, length)


def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    max_grid: int | tuple[int, int] | None = None,
) -> jax.Array:
    """ROIAlign of `boxes` on `features`, as torchvision.ops.roi_align (SPEC section 8).

    Args:
      features: (B, H, W, C) feature maps.
      boxes: (B, K, 4) per map, x1, y1, x2, y2 in input pixels (padded boxes are fine: their
        output is whatever the padding box gives and should be masked by the caller).
      output_size: out_h, out_w (an int for both).
      spatial_scale: multiplies the box coordinates (1/16 for a 16-pixel patch grid).
      sampling_ratio: s > 0: s x s samples per bin; s <= 0: ceil(roi_h / out_h) x
        ceil(roi_w / out_w) per box (adaptive), up to the static maximum (module docstring).
      aligned: False: no half-pixel shift and box sides clamped to at least 1 (torchvision's
        legacy default); True: coordinates shifted by -0.5, no clamp.
      max_grid: adaptive sampling's static maximum samples per bin per axis (default
        ceil(H / out_h), ceil(W / out_w)).

    Returns:
      (B, K, out_h, out_w, C), in features' dtype (computed in float32 at least).
    """
    if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(
            f"roi_align takes features (B, H, W, C) and boxes (B, K, 4), got "
            f"{features.shape} and {boxes.shape}"
        )
    if boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes {boxes.shape} and features {features.shape}: batch differs")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    _, height, width, _ = features.shape
    dtype = jnp.promote_types(features.dtype, jnp.float32)
    b = jax.lax.stop_gradient(boxes).astype(dtype) * spatial_scale  # (B, K, 4)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (b[..., j] - offset for j in range(4))  # (B, K) each
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        grid_h = jnp.full(roi_h.shape, sampling_ratio, jnp.int32)
        grid_w = grid_h
        slots_h = slots_w = sampling_ratio
    else:
        grid_h = jnp.ceil(roi_h / out_h).astype(jnp.int32)  # (B, K), <= 0 for empty boxes
        grid_w = jnp.ceil(roi_w / out_w).astype(jnp.int32)
        if max_grid is None:
            slots_h, slots_w = math.ceil(height / out_h), math.ceil(width / out_w)
        else:
            slots_h, slots_w = (max_grid, max_grid) if isinstance(max_grid, int) else max_grid
        grid_h, grid_w = jnp.minimum(grid_h, slots_h), jnp.minimum(grid_w, slots_w)
    ay = _axis_weights(y1, roi_h, out_h, grid_h, slots_h, height)  # (B, K, out_h, H)
    ax = _axis_weights(x1, roi_w, out_w, grid_w, slots_w, width)  # (B, K, out_w, W)
    count = jnp.maximum(grid_h * grid_w, 1).astype(dtype)  # (B, K); torchvision's max(.., 1)
    hp = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("bkph,bhwc->bkpwc", ay, features.astype(dtype), precision=hp)
    out = jnp.einsum("bkpwc,bkqw->bkpqc", rows, ax, precision=hp)  # (B, K, out_h, out_w, C)
    return (out / count[..., None, None, None]).astype(features.dtype)
