"""What the wrappers of both kernels (Triton: selective_scan.py; Mosaic TPU:
selective_scan_tpu.py) do to their inputs before the kernels see them: check their dtypes and
shapes, and pad an axis with zeros to the kernels' blocks."""

import jax.numpy as jnp

from pallas_kernels.scan_chunk import VARIANTS

KERNEL_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def check(u, A, variant: str) -> None:
    """ValueError naming the problem: a dtype the kernels do not take, shapes that are not
    (batch, L, D) and (D, N), an unknown chunk variant."""
    for name, x in (("u", u), ("A", A)):
        if x.dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"pallas selective_scan: {name} has dtype {x.dtype}; the kernels take float32, "
                "bfloat16 or float16 (state and accumulation are float32); use another "
                "algorithm for float64"
            )
    if u.ndim != 3 or A.ndim != 2 or A.shape[0] != u.shape[2]:
        raise ValueError(
            f"pallas selective_scan: u has shape {u.shape} and A {A.shape}; expected "
            "(batch, L, D) and (D, N)"
        )
    if variant not in VARIANTS:
        raise ValueError(f"pallas selective_scan: unknown variant {variant!r}; valid: {VARIANTS}")


def pad_axis(x, axis: int, size: int):
    """x with `axis` padded with zeros to `size` (None and full axes as they are)."""
    if x is None or x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad)
