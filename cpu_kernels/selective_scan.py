"""The `cpu` algorithm: the selective scan as the C++ kernels of selective_scan.cc, custom VJP.

    y = scan(u, delta, A, B, C, mask_diagonal=..., residual=..., reverse=...)

float32 arrays, u and delta (b, l, d), A (d, n), B and C (b, l, n); no D skip and no gate
(`vmp_jax.ssm.selective_scan` adds them, and casts other dtypes to float32 first). The forward
kernel keeps the state entering each block of `block_tokens(n)` tokens for the backward, which
recomputes each block from it: O(l / T) saved states, as `chunked` and the GPU kernels.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cpu_kernels import build

CHANNELS_PER_TASK = 64  # CW in selective_scan.cc: the channels one task holds on its lanes
BLOCK_BYTES = 256 * 1024  # per task and block: its discretised a, and the backward's states


def block_tokens(n: int) -> int:
    """T, the tokens a block discretises at once: its (T, n, CW) float32 decays and, in the
    backward, the (T, n, CW) states before each token fit BLOCK_BYTES, so that they stay in a
    core's L2 cache between the bulk exp and the recurrence (T = 32 at N = 16)."""
    return max(1, BLOCK_BYTES // (2 * n * CHANNELS_PER_TASK * 4))


class Options(NamedTuple):
    block: int
    reverse: bool
    mask_diagonal: bool
    residual: bool

    def attributes(self) -> dict:
        return {
            "block": np.int64(self.block),
            "reverse": self.reverse,
            "mask_diagonal": self.mask_diagonal,
            "residual": self.residual,
        }


def _call(target: str, results, u, delta, A, B, C, *backward, options: Options):
    """Calls a kernel on (u, delta, A, B, C), and for the backward (dy, saved_h, saved_r),
    after `check_shapes`: the C++ code takes every size from u and A, and its entry refuses
    any other buffer that does not match them (an InvalidArgument error when the compiled
    program runs, never a read out of bounds); checking here names the operand at trace time."""
    check_shapes(u, delta, A, B, C, *backward, block=options.block)
    # vmap runs the kernel once per mapped element: the kernels take one (b, l, d) problem.
    call = jax.ffi.ffi_call(target, results, vmap_method="sequential")
    return call(u, delta, A.T, B, C, *backward, **options.attributes())


def check_shapes(u, delta, A, B, C, dy=None, saved_h=None, saved_r=None, *, block: int) -> None:
    """ValueError naming the first operand whose shape does not match what u (b, l, d) and A
    (d, n) make of it: delta and dy (b, l, d), B and C (b, l, n), the saved states
    (b, ceil(l / block), n, d); and a block below one token."""
    if block < 1:
        raise ValueError(f"cpu scan: block must be >= 1 tokens, got {block}")
    if len(u.shape) != 3:
        raise ValueError(f"cpu scan: u has shape {tuple(u.shape)}, expected (b, l, d)")
    b, l, d = u.shape
    if len(A.shape) != 2 or A.shape[0] != d:
        raise ValueError(f"cpu scan: A has shape {tuple(A.shape)}, expected (d, n) with d = {d}")
    n = A.shape[1]
    saved = (b, -(-l // block), n, d)
    expected = {"delta": (b, l, d), "B": (b, l, n), "C": (b, l, n), "dy": (b, l, d)}
    expected |= {"saved_h": saved, "saved_r": saved}
    given = {"delta": delta, "B": B, "C": C, "dy": dy, "saved_h": saved_h, "saved_r": saved_r}
    for name, x in given.items():
        if x is not None and tuple(x.shape) != expected[name]:
            raise ValueError(
                f"cpu scan: {name} has shape {tuple(x.shape)}, expected {expected[name]} "
                f"(u is {tuple(u.shape)}, A {tuple(A.shape)})"
            )


def _saved_shape(u, A, options: Options) -> jax.ShapeDtypeStruct:
    b, l, d = u.shape
    blocks = -(-l // options.block)
    return jax.ShapeDtypeStruct((b, blocks, A.shape[1], d), jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _scan(u, delta, A, B, C, options: Options):
    y = jax.ShapeDtypeStruct(u.shape, jnp.float32)
    return _call("VmpScanForward", y, u, delta, A, B, C, options=options)


def _scan_fwd(u, delta, A, B, C, options: Options):
    y = jax.ShapeDtypeStruct(u.shape, jnp.float32)
    saved = _saved_shape(u, A, options)
    y, saved_h, saved_r = _call(
        "VmpScanForwardSaving", (y, saved, saved), u, delta, A, B, C, options=options
    )
    return y, (u, delta, A, B, C, saved_h, saved_r)


def _scan_bwd(options: Options, residuals, dy):
    u, delta, A, B, C, saved_h, saved_r = residuals
    b, l, d = u.shape
    n = A.shape[1]
    channel_blocks = -(-d // CHANNELS_PER_TASK)
    shapes = (
        jax.ShapeDtypeStruct(u.shape, jnp.float32),  # du
        jax.ShapeDtypeStruct(u.shape, jnp.float32),  # ddelta
        jax.ShapeDtypeStruct((b, n, d), jnp.float32),  # dA per batch element, transposed
        jax.ShapeDtypeStruct((channel_blocks, b, l, n), jnp.float32),  # dB per channel block
        jax.ShapeDtypeStruct((channel_blocks, b, l, n), jnp.float32),  # dC per channel block
    )
    args = (u, delta, A, B, C, dy.astype(jnp.float32), saved_h, saved_r)
    du, ddelta, dA, dB, dC = _call("VmpScanBackward", shapes, *args, options=options)
    return du, ddelta, dA.sum(0).T, dB.sum(0), dC.sum(0)


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan(
    u,
    delta,
    A,
    B,
    C,
    *,
    mask_diagonal: bool,
    residual: bool,
    reverse: bool = False,
    block: int | None = None,
):
    """The scan of one direction (no D skip, no gate): float32 (b, l, d) -> (b, l, d).

    `block` sets the tokens discretised at once (None: `block_tokens`, sized for the cache).
    Builds and registers the kernels on first use (`build.load`; KernelUnavailable if this
    machine cannot compile them)."""
    build.load()
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if x.dtype != jnp.float32:
            raise ValueError(f"cpu scan: {name} must be float32, got {x.dtype}")
    if block is not None and block < 1:
        raise ValueError(f"cpu scan: block must be >= 1 tokens, got {block}")
    if len(A.shape) != 2:  # before block_tokens reads its n; every shape: `_call`
        raise ValueError(f"cpu scan: A has shape {tuple(A.shape)}, expected (d, n)")
    block = block or block_tokens(A.shape[1])
    options = Options(block, bool(reverse), bool(mask_diagonal), bool(residual))
    return _scan(u, delta, A, B, C, options)
