"""The `chunked` algorithm: dense within a chunk of q tokens, a scan over chunk-boundary states.

The residual SSM (SPEC section 3) is a plain SSM driven by x_t = b_t u_t + r_{t-1}, where
r_{t-1} = r0 + sum_{s<t} a_s b_s u_s is a running sum. Within a chunk that starts from the
carried state (h0, r0), with tokens 1..q and P(i..j) = prod a_i..a_j:
  h_t = P(1..t) h0 + sum_{s<=t} P(s+1..t) x_s            (x_s = b_s u_s, r = 0 when plain)
      = [P(1..t) h0 + r_{t-1} + sum_{s<t} P(s+1..t) x_s] + b_t u_t
The bracket is the exclusive state that the masked diagonal reads out (section 2). The strictly
lower (q, q) matrix P(s+1..t) per (d, n) is built from exponentials of non-positive numbers
only: the "dense" part, O(q) work per token.

Gradients come from a custom VJP in the manner of mamba_ssm's CUDA kernel: the forward pass
keeps only the state entering each chunk, (k, b, d, n), and the backward pass walks the chunks
in reverse, recomputing each chunk from its entering state and pulling the cotangent through
it. Nothing of size (l, d, n) is kept. To keep the (q, q) working set small too, a chunk is
processed a block of channels at a time (channels never interact), and chunks are sliced out
of the (b, l, ...) arrays in place rather than padded and transposed. A last partial chunk of
l % q tokens is handled as its own, statically shaped step.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pallas_kernels.blocks import DEFAULT_BLOCKS, ScanBlocks
from vmp_jax.ssm.discretization import input_term, log_decay, readout


def chunk_step(carry, chunk, A, *, mask_diagonal: bool, residual: bool):
    """Advance the state over one chunk of one channel block and read out its outputs.

    Args:
      carry: (h0,) or (h0, r0), each (b, c, n): the state before the chunk (c channels).
      chunk: u, delta (b, q, c) and B, C (b, q, n).
      A: (c, n).

    Returns:
      (the state after the chunk, y (b, q, c)).
    """
    u, delta, B, C = chunk
    q = u.shape[1]
    log_a = log_decay(delta, A)  # (b, q, c, n)
    bu = input_term(u, delta, B)  # (b, q, c, n)
    cum = jnp.cumsum(log_a, axis=1)  # (b, q, c, n): log P(1..t)
    idx = jnp.arange(q)
    strict = (idx[:, None] > idx[None, :])[None, :, :, None, None]  # (1, t, s, 1, 1)
    seg = cum[:, :, None] - cum[:, None, :]  # (b, t, s, c, n): log P(s+1..t) where s < t
    decay = jnp.exp(jnp.where(strict, seg, -jnp.inf))  # (b, t, s, c, n), zero for s >= t
    exclusive = jnp.exp(cum) * carry[0][:, None]  # (b, q, c, n)
    x = bu
    if residual:
        a_bu = jnp.exp(log_a) * bu
        r_before = carry[1][:, None] + _exclusive_cumsum(a_bu)  # r_{t-1}
        x = bu + r_before
        exclusive = exclusive + r_before
    exclusive = exclusive + jnp.sum(decay * x[:, None], axis=2)  # (b, q, c, n)
    inclusive = exclusive + bu
    y = readout(exclusive if mask_diagonal else inclusive, C)  # (b, q, c)
    if residual:
        return (inclusive[:, -1], r_before[:, -1] + a_bu[:, -1]), y
    return (inclusive[:, -1],), y


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    """sum_{s<t} x_s along axis 1, zero at t = 0."""
    return jnp.cumsum(jnp.pad(x[:, :-1], [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2)), axis=1)


class _Layout(NamedTuple):
    """Static geometry: k full chunks of q tokens, a remainder of `rest` tokens, c-wide blocks.

    With `reverse` the chunks are taken from the end of the sequence and each q-token window is
    flipped on its own, so the (b, l, ...) arrays are never flipped whole.
    """

    l: int
    q: int
    k: int
    rest: int
    c: int
    blocks: int
    reverse: bool

    def chunk_start(self, i):
        """First token of the i-th full chunk in scan order."""
        return self.l - (i + 1) * self.q if self.reverse else i * self.q

    def rest_start(self) -> int:
        """First token of the remainder, which comes last in scan order."""
        return 0 if self.reverse else self.k * self.q

    def orient(self, x: jax.Array) -> jax.Array:
        """A window (b, q, ...) in scan order, or back: flipped along time when reversed."""
        return jnp.flip(x, axis=1) if self.reverse else x


def _layout(l: int, d: int, blocks: ScanBlocks, reverse: bool) -> _Layout:
    q = min(blocks.chunk_size, l)
    c = min(blocks.channel_block or d, d)
    while d % c:  # the largest block width <= the requested one that divides d
        c -= 1
    return _Layout(l=l, q=q, k=l // q, rest=l % q, c=c, blocks=d // c, reverse=reverse)


def _window(x, start, length, c0=None, c=None):
    """x[:, start:start+length, c0:c0+c] (channels only for 3-d x with c given)."""
    if c is None:
        return jax.lax.dynamic_slice_in_dim(x, start, length, axis=1)
    return jax.lax.dynamic_slice(x, (0, start, c0), (x.shape[0], length, c))


def _chunk_inputs(inputs, start, length, c0, lay: _Layout):
    """The chunk's u, delta (b, length, c) and B, C (b, length, n), in scan order."""
    u, delta, B, C = inputs
    windows = (
        _window(u, start, length, c0, lay.c),
        _window(delta, start, length, c0, lay.c),
        _window(B, start, length),
        _window(C, start, length),
    )
    return tuple(lay.orient(w) for w in windows)


def _carry_block(state, c0, c):
    return tuple(jax.lax.dynamic_slice_in_dim(s, c0, c, axis=1) for s in state)


def _put_block(state, block, c0):
    return tuple(
        jax.lax.dynamic_update_slice_in_dim(s, v, c0, axis=1)
        for s, v in zip(state, block, strict=True)
    )


def _forward_chunk(inputs, A, state, y, start, length, lay, flags):
    """Advance `state` (b, d, n) over tokens [start, start + length), writing y (b, l, d)."""

    def block(j, acc):
        state, y = acc
        c0 = j * lay.c
        chunk = _chunk_inputs(inputs, start, length, c0, lay)
        A_blk = jax.lax.dynamic_slice_in_dim(A, c0, lay.c, axis=0)
        new, y_blk = chunk_step(_carry_block(state, c0, lay.c), chunk, A_blk, **flags)
        y = jax.lax.dynamic_update_slice(y, lay.orient(y_blk), (0, start, c0))
        return _put_block(state, new, c0), y

    return jax.lax.fori_loop(0, lay.blocks, block, (state, y))


def _forward(inputs, A, lay: _Layout, flags):
    """y (b, l, d) and the state entering each full chunk and the remainder, (k + 1, b, d, n)."""
    u = inputs[0]
    b, l, d = u.shape
    zeros = jnp.zeros((b, d, A.shape[1]), u.dtype)
    state = (zeros, zeros) if flags["residual"] else (zeros,)
    saved = tuple(jnp.zeros((lay.k + 1, *zeros.shape), u.dtype) for _ in state)
    y = jnp.zeros_like(u)

    def chunk(i, acc):
        state, y, saved = acc
        saved = tuple(s.at[i].set(v) for s, v in zip(saved, state, strict=True))
        state, y = _forward_chunk(inputs, A, state, y, lay.chunk_start(i), lay.q, lay, flags)
        return state, y, saved

    state, y, saved = jax.lax.fori_loop(0, lay.k, chunk, (state, y, saved))
    saved = tuple(s.at[lay.k].set(v) for s, v in zip(saved, state, strict=True))
    if lay.rest:
        _, y = _forward_chunk(inputs, A, state, y, lay.rest_start(), lay.rest, lay, flags)
    return y, saved


def _add_window(buf, grad, index):
    """buf[index : index + grad.shape] += grad, in place."""
    current = jax.lax.dynamic_slice(buf, index, grad.shape)
    return jax.lax.dynamic_update_slice(buf, current + grad, index)


def _backward_chunk(inputs, A, entering, dstate, dy, grads, start, length, lay, flags):
    """Pull the cotangents of a chunk's outputs and exit state back through it.

    Returns the cotangent of the state entering the chunk, (b, d, n) each, and the gradients
    (du, ddelta, dB, dC, dA) with this chunk's contributions added.
    """
    step = partial(chunk_step, **flags)

    def block(j, acc):
        dstate, (du, ddelta, dB, dC, dA) = acc
        c0 = j * lay.c
        chunk = _chunk_inputs(inputs, start, length, c0, lay)
        A_blk = jax.lax.dynamic_slice_in_dim(A, c0, lay.c, axis=0)
        _, pullback = jax.vjp(step, _carry_block(entering, c0, lay.c), chunk, A_blk)
        dy_blk = lay.orient(_window(dy, start, length, c0, lay.c))
        d_entering, dchunk, dA_b = pullback((_carry_block(dstate, c0, lay.c), dy_blk))
        du_b, ddelta_b, dB_b, dC_b = (lay.orient(g) for g in dchunk)
        grads = (
            jax.lax.dynamic_update_slice(du, du_b, (0, start, c0)),
            jax.lax.dynamic_update_slice(ddelta, ddelta_b, (0, start, c0)),
            _add_window(dB, dB_b, (0, start, 0)),  # B and C are shared by every channel block
            _add_window(dC, dC_b, (0, start, 0)),
            _add_window(dA, dA_b, (c0, 0)),
        )
        return _put_block(dstate, d_entering, c0), grads

    return jax.lax.fori_loop(0, lay.blocks, block, (dstate, grads))


def _backward(inputs, A, saved, dy, lay: _Layout, flags):
    """Gradients (du, ddelta, dB, dC, dA), walking the chunks from last to first."""
    u, delta, B, C = inputs
    grads = (jnp.zeros_like(u), jnp.zeros_like(delta), jnp.zeros_like(B), jnp.zeros_like(C))
    grads = (*grads, jnp.zeros_like(A))
    dstate = tuple(jnp.zeros_like(s[0]) for s in saved)  # the final state is no output
    if lay.rest:
        entering = tuple(s[lay.k] for s in saved)
        start = lay.rest_start()
        dstate, grads = _backward_chunk(
            inputs, A, entering, dstate, dy, grads, start, lay.rest, lay, flags
        )

    def chunk(j, acc):
        i = lay.k - 1 - j
        entering = tuple(s[i] for s in saved)
        dstate, grads = acc
        start = lay.chunk_start(i)
        return _backward_chunk(inputs, A, entering, dstate, dy, grads, start, lay.q, lay, flags)

    _, grads = jax.lax.fori_loop(0, lay.k, chunk, (dstate, grads))
    return grads


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _chunked(u, delta, B, C, A, lay: _Layout, mask_diagonal: bool, residual: bool):
    flags = {"mask_diagonal": mask_diagonal, "residual": residual}
    return _forward((u, delta, B, C), A, lay, flags)[0]


def _chunked_fwd(u, delta, B, C, A, lay, mask_diagonal, residual):
    flags = {"mask_diagonal": mask_diagonal, "residual": residual}
    y, saved = _forward((u, delta, B, C), A, lay, flags)
    return y, ((u, delta, B, C), A, saved)


def _chunked_bwd(lay, mask_diagonal, residual, res, dy):
    inputs, A, saved = res
    flags = {"mask_diagonal": mask_diagonal, "residual": residual}
    return _backward(inputs, A, saved, dy, lay, flags)  # (du, ddelta, dB, dC, dA)


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


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
    blocks: ScanBlocks = DEFAULT_BLOCKS,
) -> jax.Array:
    """The scan of one direction (no D skip, no gate): (b, l, d) -> (b, l, d).

    `blocks` (chunk_size q and channel_block c are used) trades the O(q) dense work per token
    and the (q, q) working set against the number of saved states (l / q) and loop steps. The
    default was chosen on CPU at (2, 3137, 384, 16), VMP options on: forward+backward temp
    memory 32 MiB, 5% of `sequential`'s (benchmarks/RESULTS.md).
    """
    lay = _layout(u.shape[1], u.shape[2], blocks, reverse)
    return _chunked(u, delta, B, C, A, lay, mask_diagonal, residual)
