"""The `sequential` algorithm: one lax.scan step per token, the SPEC recurrences written out.

  plain:     h_t = a_t h_{t-1} + b_t u_t
  residual:  h_t = a_t h_{t-1} + r_{t-1} + b_t u_t,   r_t = r_{t-1} + a_t b_t u_t
The masked diagonal reads the output from the exclusive state h_t - b_t u_t, formed before
b_t u_t is added so that nothing cancels. Under autodiff lax.scan keeps every step's (b, d, n)
residuals, L of them: this is the memory baseline the `chunked` algorithm improves on.
"""

from functools import partial

import jax
import jax.numpy as jnp

from vmp_jax.ssm.discretization import input_term, log_decay, readout


def step(carry, x, A, *, mask_diagonal: bool, residual: bool):
    """One token: carry (h,) or (h, r), each (b, d, n); x = (u_t, delta_t, B_t, C_t) with
    shapes (b, d), (b, d), (b, n), (b, n). Returns (the new carry, y_t (b, d))."""
    u_t, delta_t, B_t, C_t = x
    a_t = jnp.exp(log_decay(delta_t, A))  # (b, d, n)
    bu_t = input_term(u_t, delta_t, B_t)  # (b, d, n)
    if residual:
        h, r = carry
        exclusive = a_t * h + r
        carry = (exclusive + bu_t, r + a_t * bu_t)
    else:
        (h,) = carry
        exclusive = a_t * h
        carry = (exclusive + bu_t,)
    return carry, readout(exclusive if mask_diagonal else carry[0], C_t)


def scan(u, delta, A, B, C, *, mask_diagonal: bool, residual: bool) -> jax.Array:
    """Causal scan (no D skip, no gate): (b, l, d) -> (b, l, d)."""
    b, _, d = u.shape
    n = A.shape[1]
    zeros = jnp.zeros((b, d, n), u.dtype)
    init = (zeros, zeros) if residual else (zeros,)
    time_major = tuple(jnp.swapaxes(x, 0, 1) for x in (u, delta, B, C))  # (l, b, ...)
    body = partial(step, A=A, mask_diagonal=mask_diagonal, residual=residual)
    _, y = jax.lax.scan(body, init, time_major)  # (l, b, d)
    return jnp.swapaxes(y, 0, 1)
