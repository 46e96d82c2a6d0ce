"""The per-chunk arithmetic of the Pallas selective-scan kernels, shared by forward and backward.

Everything here works on one channel block (c channels) of one batch element, one token at a
time, in float32, with plain jnp element-wise ops and axis reductions only: the subset that
Pallas' Triton lowering accepts (no slicing of register tensors, no dot for these tiny shapes).
A chunk is a Python list of q `Step`s, unrolled when the kernel is traced, so that every
token's (c, n) tile is its own value and no dynamic indexing of registers is needed.

Two ways to get the states of a chunk from the state entering it (SPEC sections 1 and 3):
  sequential:   h_i = a_i h_{i-1} + r_{i-1} + w_i,  r_i = r_{i-1} + a_i w_i, one token after
                the other (w_i = b_i u_i; r = 0 for the plain SSM): depth q, work q.
  associative:  a Hillis-Steele inclusive scan of the chunk's affine maps with the SPEC
                section 3 operator (the plain (a, p) operator without the residual): depth
                log2(q), work q log2(q); the entering state is applied to the prefixes after.

The two combine operators are also those of the XLA `associative` algorithm (vmp_jax.ssm), which
imports them from here: this module depends on jax alone. A third, `combine_adjoint`, composes
the backward pass's carry over the segments of a split scan (selective_scan.py).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

VARIANTS = ("sequential", "associative")


def combine_plain(first, second):
    """Apply `first` then `second`: (a1, p1), (a2, p2) -> (a2 a1, a2 p1 + p2)."""
    a1, p1 = first
    a2, p2 = second
    return a2 * a1, a2 * p1 + p2


def combine_residual(first, second):
    """Apply `first` then `second` (SPEC section 3):
    (a2 a1, a2 c1 + c2, a2 p1 + c2 q1 + p2, q1 + q2)."""
    a1, c1, p1, q1 = first
    a2, c2, p2, q2 = second
    return a2 * a1, a2 * c1 + c2, a2 * p1 + c2 * q1 + p2, q1 + q2


def combine_adjoint(first, second):
    """Apply `first` then `second`, maps of the backward pass's carry (x, dr) -> (A x + P,
    dr + C x + Q) (the transpose of the residual SSM's): (A1, C1, P1, Q1), (A2, C2, P2, Q2)
    -> (A2 A1, C1 + C2 A1, A2 P1 + P2, Q1 + C2 P1 + Q2)."""
    a1, c1, p1, q1 = first
    a2, c2, p2, q2 = second
    return a2 * a1, c1 + c2 * a1, a2 * p1 + p2, q1 + c2 * p1 + q2


class Step(NamedTuple):
    """One token of one channel block, float32: u, delta (c,); B, C (n,); a, w (c, n)."""

    u: jax.Array
    delta: jax.Array
    B: jax.Array
    C: jax.Array | None  # None where C is not read (a segment's summary)
    a: jax.Array  # exp(delta * A)
    w: jax.Array  # b u = delta u B


def make_step(u, delta, B, C, A) -> Step:
    """Discretise one token: (c,), (c,), (n,), (n,), (c, n) -> Step."""
    a = jnp.exp(delta[:, None] * A)  # (c, n)
    w = (delta * u)[:, None] * B[None, :]  # (c, n)
    return Step(u, delta, B, C, a, w)


def _states_sequential(steps, h, r, residual):
    hs, rs = [], []
    for s in steps:
        h = s.a * h + r + s.w if residual else s.a * h + s.w
        if residual:
            r = r + s.a * s.w
        hs.append(h)
        rs.append(r)
    return hs, rs


def _inclusive_scan(elems, combine):
    """Hillis-Steele inclusive scan over a list: prefix[i] = elems[0] then ... then elems[i]."""
    prefix = list(elems)
    offset = 1
    while offset < len(prefix):
        prefix = [
            combine(prefix[i - offset], e) if i >= offset else e for i, e in enumerate(prefix)
        ]
        offset *= 2
    return prefix


def _states_associative(steps, h, r, residual):
    if residual:
        ones = jnp.ones_like(steps[0].a)
        elems = [(s.a, ones, s.w, s.a * s.w) for s in steps]
        prefix = _inclusive_scan(elems, combine_residual)
        hs = [pa * h + pc * r + pp for pa, pc, pp, _ in prefix]
        rs = [r + pq for *_, pq in prefix]
        return hs, rs
    prefix = _inclusive_scan([(s.a, s.w) for s in steps], combine_plain)
    return [pa * h + pp for pa, pp in prefix], [r] * len(steps)


def chunk_states(steps, h, r, *, residual: bool, variant: str):
    """Inclusive states of a chunk from the entering (h, r), each (c, n).

    Returns (hs, rs): lists of q (c, n) tiles, h_i and r_i after token i (rs is r repeated
    when there is no residual).
    """
    if variant == "sequential":
        return _states_sequential(steps, h, r, residual)
    return _states_associative(steps, h, r, residual)


def readout_state(step: Step, h_prev, r_prev, h, *, mask_diagonal: bool, residual: bool):
    """The state that y reads: h_i, or with the masked diagonal the exclusive a_i h_{i-1} +
    r_{i-1}, formed without subtracting w_i so that nothing cancels."""
    if not mask_diagonal:
        return h
    return step.a * h_prev + r_prev if residual else step.a * h_prev


def gate(y, z):
    """y * silu(z) and d(y * silu(z))/dy = silu(z), d/dz = y silu'(z)."""
    sig = jax.nn.sigmoid(z)
    silu = z * sig
    return y * silu, silu, y * sig * (1.0 + z * (1.0 - sig))
