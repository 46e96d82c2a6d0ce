"""The `associative` algorithm: lax.associative_scan over affine maps of the state, O(log L) depth.

Plain SSM: the element (a, p) maps h -> a*h + p; step t is (a_t, b_t u_t).
Residual SSM (SPEC section 3): the element (a, c, p, q) maps (h, r) -> (a*h + c*r + p, r + q);
step t is (a_t, 1, b_t u_t, a_t b_t u_t). Every element is a (b, l, d, n) array, so this trades
memory for parallel depth. The two operators are the ones the Pallas kernels' chunks use
(`pallas_kernels.scan_chunk`), where they live so that neither package imports the other's
`__init__`.
"""

import jax
import jax.numpy as jnp

from pallas_kernels.scan_chunk import combine_plain, combine_residual
from vmp_jax.ssm.discretization import input_term, log_decay, readout


def _shift_right(x: jax.Array) -> jax.Array:
    """x_{t-1} along the token axis, zero at t = 0: (b, l, ...) -> (b, l, ...)."""
    return jnp.pad(x[:, :-1], [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))


def scan(u, delta, A, B, C, *, mask_diagonal: bool, residual: bool) -> jax.Array:
    """Causal scan (no D skip, no gate): (b, l, d) -> (b, l, d)."""
    a = jnp.exp(log_decay(delta, A))  # (b, l, d, n)
    bu = input_term(u, delta, B)  # (b, l, d, n)
    if residual:
        elems = (a, jnp.ones_like(a), bu, a * bu)
        _, _, h, r = jax.lax.associative_scan(combine_residual, elems, axis=1)
        # exclusive state a_t h_{t-1} + r_{t-1}, built from shifted prefixes: nothing cancels.
        exclusive = a * _shift_right(h) + _shift_right(r) if mask_diagonal else None
    else:
        _, h = jax.lax.associative_scan(combine_plain, (a, bu), axis=1)
        exclusive = a * _shift_right(h) if mask_diagonal else None
    return readout(exclusive if mask_diagonal else h, C)
