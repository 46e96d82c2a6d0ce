"""What the wrappers of both kernels (Triton: selective_scan.py; Mosaic TPU:
selective_scan_tpu.py) share: checking the inputs' dtypes and shapes, padding an axis with
zeros to the kernels' blocks, and the custom VJP that ties a forward and a backward pass."""

import functools

import jax
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


def saving_states_vjp(forward, backward):
    """scan(cfg, u, delta, A, B, C, D, z) -> y with a custom VJP: the primal runs
    `forward(..., save_states=False)` (the inference forward, nothing saved); under
    differentiation `forward(..., save_states=True)` also returns the states entering each
    chunk, and `backward(cfg, (u, delta, A, B, C, D, z, states), dy)` gives the cotangents.
    `cfg`, the call's static description, must be hashable."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def scan(cfg, u, delta, A, B, C, D, z):
        return forward(cfg, u, delta, A, B, C, D, z, save_states=False)[0]

    def scan_forward(cfg, u, delta, A, B, C, D, z):
        y, states = forward(cfg, u, delta, A, B, C, D, z, save_states=True)
        return y, (u, delta, A, B, C, D, z, states)

    scan.defvjp(scan_forward, backward)
    return scan
