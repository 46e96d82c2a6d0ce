"""The `chunked` algorithm: dense within a chunk of q tokens, a scan over chunk-boundary states.

Within a chunk that starts from the carried state (h0, r0), with tokens 1..q and
P(i..j) = prod a_i..a_j, S[t, s] = sum_{l=s+1..t} P(l+1..t) (SPEC section 3):
  h_t = P(1..t) h0 + S0[t] r0 + sum_{s<=t} K[t, s] b_s u_s,   S0[t] = sum_{l<=t} P(l+1..t)
  K[t, s] = P(s+1..t)  (+ a_s S[t, s] for the residual SSM; r0 = 0 and S0 unused otherwise)
  r_q = r0 + sum_s a_s b_s u_s
K is a (q, q) matrix per (d, n), built from exponentials of non-positive numbers only.

Gradients come from a custom VJP in the manner of mamba_ssm's CUDA kernel: the forward pass
keeps only the state entering each chunk, (k, b, d, n), and the backward pass walks the chunks
in reverse, recomputing each chunk from its entering state and pulling the cotangent through
it. Nothing of size (l, d, n) is kept between the passes.
"""

from functools import partial

import jax
import jax.numpy as jnp

from vmp_jax.ssm.discretization import input_term, log_decay, readout

DEFAULT_CHUNK_SIZE = 16

_HIGHEST = jax.lax.Precision.HIGHEST


def _chunk_step(carry, chunk, A, mask_diagonal: bool, residual: bool):
    """Advance the state over one chunk and read out its outputs.

    Args:
      carry: (h0,) or (h0, r0), each (b, d, n): the state before the chunk.
      chunk: u, delta (b, q, d) and B, C (b, q, n).
      A: (d, n).

    Returns:
      (the state after the chunk, y (b, q, d)).
    """
    u, delta, B, C = chunk
    q = u.shape[1]
    log_a = log_decay(delta, A)  # (b, q, d, n)
    bu = input_term(u, delta, B)  # (b, q, d, n)
    cum = jnp.cumsum(log_a, axis=1)  # (b, q, d, n): log P(1..t)
    idx = jnp.arange(q)
    causal = (idx[:, None] >= idx[None, :])[None, :, :, None, None]  # (1, t, s, 1, 1)
    strict = (idx[:, None] > idx[None, :])[None, :, :, None, None]
    seg = cum[:, :, None] - cum[:, None, :]  # (b, t, s, d, n): log P(s+1..t) where s <= t
    decay = jnp.exp(jnp.where(causal, seg, -jnp.inf))  # (b, t, s, d, n)
    kernel = decay
    if residual:
        tail = jax.lax.cumsum(decay, axis=2, reverse=True)  # sum_{l>=s} P(l+1..t)
        row_sum = tail[:, :, 0]  # (b, t, d, n): S0[t]
        tail = jnp.pad(tail[:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0), (0, 0)))  # S[t, s]
        kernel = decay + jnp.exp(log_a)[:, None] * tail
    # Exclusive in-chunk states (source s < t): the diagonal K[t, t] b_t u_t = b_t u_t is added
    # back for the inclusive state rather than subtracted from it, so nothing cancels.
    exclusive = jnp.sum(jnp.where(strict, kernel, 0.0) * bu[:, None], axis=2)  # (b, q, d, n)
    exclusive = exclusive + jnp.exp(cum) * carry[0][:, None]
    if residual:
        exclusive = exclusive + row_sum * carry[1][:, None]
    inclusive = exclusive + bu
    y = readout(exclusive if mask_diagonal else inclusive, C)  # (b, q, d)
    new_carry = (inclusive[:, -1],)
    if residual:
        r_end = carry[1] + jnp.sum(jnp.exp(log_a) * bu, axis=1)
        new_carry = (inclusive[:, -1], r_end)
    return new_carry, y


def _zero_carry(u, A, residual: bool):
    b, d, n = u.shape[1], u.shape[3], A.shape[1]
    zeros = jnp.zeros((b, d, n), u.dtype)
    return (zeros, zeros) if residual else (zeros,)


def _forward(chunks, A, mask_diagonal, residual):
    """Scan over chunks; returns y (k, b, q, d) and the state entering each chunk."""

    def body(carry, chunk):
        new_carry, y = _chunk_step(carry, chunk, A, mask_diagonal, residual)
        return new_carry, (y, carry)

    _, (y, entering) = jax.lax.scan(body, _zero_carry(chunks[0], A, residual), chunks)
    return y, entering


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _scan_chunks(chunks, A, mask_diagonal: bool, residual: bool):
    """chunks: u, delta (k, b, q, d) and B, C (k, b, q, n) -> y (k, b, q, d)."""
    return _forward(chunks, A, mask_diagonal, residual)[0]


def _scan_chunks_fwd(chunks, A, mask_diagonal, residual):
    y, entering = _forward(chunks, A, mask_diagonal, residual)
    return y, (chunks, A, entering)


def _scan_chunks_bwd(mask_diagonal, residual, saved, dy):
    chunks, A, entering = saved

    def body(carry, xs):
        dcarry, dA = carry
        carry_in, chunk, dy_chunk = xs
        step = partial(_chunk_step, mask_diagonal=mask_diagonal, residual=residual)
        _, pullback = jax.vjp(step, carry_in, chunk, A)
        dcarry_in, dchunk, dA_chunk = pullback((dcarry, dy_chunk))
        return (dcarry_in, dA + dA_chunk), dchunk

    init = (_zero_carry(chunks[0], A, residual), jnp.zeros_like(A))
    (_, dA), dchunks = jax.lax.scan(body, init, (entering, chunks, dy), reverse=True)
    return dchunks, dA


_scan_chunks.defvjp(_scan_chunks_fwd, _scan_chunks_bwd)


def _to_chunks(x: jax.Array, q: int) -> jax.Array:
    """(b, l, ...) -> (k, b, q, ...), zero-padded at the end to a whole number of chunks."""
    b, l = x.shape[:2]
    pad = -l % q
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(b, (l + pad) // q, q, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1)


def scan(
    u, delta, A, B, C, *, mask_diagonal: bool, residual: bool, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> jax.Array:
    """Causal scan (no D skip, no gate): (b, l, d) -> (b, l, d).

    Padding tokens get delta = 0 (a = 1, b = 0) and sit after the real ones, so they change no
    real output. `chunk_size` trades the O(q) dense work per token against scan length l / q.
    """
    if chunk_size < 1:
        raise ValueError(f"chunked scan: chunk_size must be >= 1, got {chunk_size}")
    b, l, d = u.shape
    q = min(chunk_size, l)
    chunks = tuple(_to_chunks(x, q) for x in (u, delta, B, C))
    y = _scan_chunks(chunks, A, mask_diagonal, residual)  # (k, b, q, d)
    return jnp.swapaxes(y, 0, 1).reshape(b, -1, d)[:, :l]
