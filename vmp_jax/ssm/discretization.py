"""SPEC section 1 discretisation, shared by every algorithm.

a_t = exp(delta_t * A) and b_t * u_t = delta_t * u_t * B_t, both (D, N) per token.
"""

import jax
import jax.numpy as jnp


def log_decay(delta: jax.Array, A: jax.Array) -> jax.Array:
    """log a_t = delta_t * A: (..., d), (d, n) -> (..., d, n), all <= 0."""
    return delta[..., None] * A


def input_term(u: jax.Array, delta: jax.Array, B: jax.Array) -> jax.Array:
    """b_t * u_t = delta_t * u_t * B_t: (..., d), (..., d), (..., n) -> (..., d, n)."""
    return (delta * u)[..., None] * B[..., None, :]


def readout(state: jax.Array, C: jax.Array) -> jax.Array:
    """y_t = sum_n C_t[n] state_t[:, n]: (..., d, n), (..., n) -> (..., d)."""
    return jnp.einsum("...dn,...n->...d", state, C, precision=jax.lax.Precision.HIGHEST)
