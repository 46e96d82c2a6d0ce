"""The `reference` algorithm: the dense state kernel G and similarity matrix M of SPEC sections 1-3.

O(L^2 D N) memory and time: for tests, for the paper's analysis of M, never for training.

G[t, s] is the (D, N) weight of u_s in the state h_t, so h_t = sum_{s<=t} G[t, s] * u_s:
  plain SSM:     G[t, s] = b_s * P(s+1..t)
  residual SSM:  G[t, s] = b_s * (P(s+1..t) + a_s * sum_{l=s+1..t} P(l+1..t))
with P(i..j) the product of a_i..a_j (empty product 1). M[t, s] = C_t . G[t, s], and the
masked diagonal (section 2) sets M[t, t] = 0.
"""

import jax
import jax.numpy as jnp

from vmp_jax.ssm.discretization import log_decay

_HIGHEST = jax.lax.Precision.HIGHEST


def segment_log_decay(log_a: jax.Array) -> jax.Array:
    """log P(s+1..t) = sum_{k=s+1..t} log a_k for s <= t, -inf above the diagonal.

    Summed directly per (t, s) rather than as a difference of cumulative sums, which would lose
    precision once the running sum is large: (b, l, d, n) -> (b, t, s, d, n).
    """
    l = log_a.shape[1]
    idx = jnp.arange(l)
    later = (idx[:, None] > idx[None, :])[None, :, :, None, None]  # (1, k, s, 1, 1): k > s
    terms = jnp.where(later, log_a[:, :, None], 0.0)  # (b, k, s, d, n)
    sums = jnp.cumsum(terms, axis=1)  # (b, t, s, d, n): sum over s < k <= t
    causal = (idx[:, None] >= idx[None, :])[None, :, :, None, None]
    return jnp.where(causal, sums, -jnp.inf)


def state_kernel(delta, A, B, *, residual: bool = False) -> jax.Array:
    """G of the causal scan: (b, l, d), (d, n), (b, l, n) -> (b, t, s, d, n)."""
    log_a = log_decay(delta, A)  # (b, l, d, n)
    decay = jnp.exp(segment_log_decay(log_a))  # (b, t, s, d, n) = P(s+1..t), 0 for s > t
    if residual:
        # sum_{l=s+1..t} P(l+1..t): reverse cumulative sum over the source axis, shifted by one.
        tail = jax.lax.cumsum(decay, axis=2, reverse=True)
        tail = jnp.pad(tail[:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0), (0, 0)))
        decay = decay + jnp.exp(log_a)[:, None] * tail
    b_s = delta[..., None] * B[:, :, None, :]  # (b, s, d, n)
    return decay * b_s[:, None]


def similarity_matrix(
    delta, A, B, C, *, reverse: bool = False, mask_diagonal: bool = False, residual: bool = False
) -> jax.Array:
    """The paper's similarity matrix M of one scan direction, per channel.

    y = M u + D u, channel by channel. Lower-triangular for the causal scan, upper-triangular
    with `reverse=True`; zero diagonal with `mask_diagonal=True`.

    Args:
      delta: (b, l, d) positive step sizes. A: (d, n) negative. B, C: (b, l, n).

    Returns:
      M: (b, d, t, s), float32 (float64 for float64 inputs).
    """
    dtype = jnp.result_type(delta, A, B, C, jnp.float32)
    delta, A, B, C = (x.astype(dtype) for x in (delta, A, B, C))
    if reverse:
        delta, B, C = (jnp.flip(x, axis=1) for x in (delta, B, C))
    G = state_kernel(delta, A, B, residual=residual)  # (b, t, s, d, n)
    M = jnp.einsum("btsdn,btn->bdts", G, C, precision=_HIGHEST)
    if mask_diagonal:
        M = M * (1.0 - jnp.eye(M.shape[-1], dtype=dtype))
    if reverse:
        M = jnp.flip(M, axis=(-2, -1))
    return M


def scan(u, delta, A, B, C, *, mask_diagonal: bool, residual: bool) -> jax.Array:
    """Causal scan as y = M u (no D skip, no gate): (b, l, d) -> (b, l, d)."""
    M = similarity_matrix(delta, A, B, C, mask_diagonal=mask_diagonal, residual=residual)
    return jnp.einsum("bdts,bsd->btd", M, u, precision=_HIGHEST)
