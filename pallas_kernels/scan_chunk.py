"""The per-chunk arithmetic of the Pallas selective-scan kernels, shared by forward and backward
and by both backends: the GPU's Triton kernels (selective_scan.py) and the TPU's Mosaic kernels
(selective_scan_tpu.py).

Everything here works on one channel block (c channels) of one batch element, one token at a
time, in float32, with plain jnp element-wise ops and axis reductions only: the subset that
both Pallas lowerings accept (no slicing of register tensors, no dot for these tiny shapes).
A chunk is a Python list of q `Step`s, unrolled when the kernel is traced, so that every
token's state tile is its own value and no dynamic indexing of registers is needed.

The backends differ only in how a state tile is laid out (`Layout`): the GPU holds it as
(c, n), channels on rows, per-token vectors as (c,) and (n,); the TPU as (n, c), channels on
the 128 lanes, per-channel vectors as (1, c) rows and per-state vectors as (n, 1) columns. A
`Layout` puts a per-channel or per-state vector in its place for broadcasting and sums a tile
over states or channels; the rest is element-wise and the same on both.

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

from collections.abc import Callable
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


class Layout(NamedTuple):
    """How a backend holds a state tile: `channel` and `state` place a per-channel or
    per-state vector for broadcasting against the tile; `sum_states` and `sum_channels`
    reduce a tile to a per-channel or per-state vector (in the layout's vector shapes)."""

    channel: Callable
    state: Callable
    sum_states: Callable
    sum_channels: Callable


# Triton: (c, n) tiles, vectors (c,) and (n,).
ROWS = Layout(
    channel=lambda x: x[:, None],
    state=lambda x: x[None, :],
    sum_states=lambda t: jnp.sum(t, axis=1),
    sum_channels=lambda t: jnp.sum(t, axis=0),
)
# Mosaic TPU: (n, c) tiles, channels on the lanes; vectors already (1, c) and (n, 1).
LANES = Layout(
    channel=lambda x: x,
    state=lambda x: x,
    sum_states=lambda t: jnp.sum(t, axis=0, keepdims=True),
    sum_channels=lambda t: jnp.sum(t, axis=1, keepdims=True),
)


class Step(NamedTuple):
    """One token of one channel block, float32: u, delta per channel; B, C per state; a, w
    state tiles (shapes as the `Layout`)."""

    u: jax.Array
    delta: jax.Array
    B: jax.Array
    C: jax.Array | None  # None where C is not read (a segment's summary)
    a: jax.Array  # exp(delta * A)
    w: jax.Array  # b u = delta u B


def make_step(u, delta, B, C, A, layout: Layout = ROWS) -> Step:
    """Discretise one token: u, delta per channel, B, C per state, A a state tile -> Step."""
    a = jnp.exp(layout.channel(delta) * A)  # state tile
    w = layout.channel(delta * u) * layout.state(B)  # state tile
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


def chunk_readouts(steps, h, r, hs, rs, *, mask_diagonal: bool, residual: bool):
    """The states y reads, per token of a chunk entered with (h, r) whose inclusive states are
    (hs, rs); and the states before each token, [h, hs[0], ...]."""
    h_prev, r_prev = [h, *hs[:-1]], [r, *rs[:-1]]
    return [
        readout_state(s, hp, rp, hi, mask_diagonal=mask_diagonal, residual=residual)
        for s, hp, rp, hi in zip(steps, h_prev, r_prev, hs, strict=True)
    ], h_prev


def gate(y, z):
    """y * silu(z) and d(y * silu(z))/dy = silu(z), d/dz = y silu'(z)."""
    sig = jax.nn.sigmoid(z)
    silu = z * sig
    return y * silu, silu, y * sig * (1.0 + z * (1.0 - sig))


def output(state, s: Step, Dskip, layout: Layout = ROWS):
    """y before the gate, per channel: sum over states of C * state, + D u."""
    return layout.sum_states(state * layout.state(s.C)) + Dskip * s.u


def backward_token(s: Step, state, h_prev, g, carry, A, *, mask_diagonal, residual, layout=ROWS):
    """Pull the cotangent g = dL/dy (per channel, before the gate) back through one token whose
    output read `state` and whose state before it was `h_prev`. carry = (x, dr, dA, dD) with
    x = a_{i+1} dh_{i+1}. Returns (du, ddelta, dB, dC, new carry): du and ddelta per channel
    (du without the D skip's g D), dB and dC per state (this channel block's part)."""
    x, dr, dA, dD = carry
    gC = layout.channel(g) * layout.state(s.C)  # state tile
    dh = gC + x
    dw = dh - gC if mask_diagonal else dh
    da = dh * h_prev
    if residual:
        dw = dw + s.a * dr
        da = da + dr * s.w
        dr = dh + dr
    dwB = layout.sum_states(dw * layout.state(s.B))  # per channel
    da_a = da * s.a
    du = dwB * s.delta
    ddelta = dwB * s.u + layout.sum_states(da_a * A)
    dB = layout.sum_channels(dw * layout.channel(s.delta * s.u))  # per state
    dC = layout.sum_channels(layout.channel(g) * state)  # per state
    carry = (s.a * dh, dr, dA + da_a * layout.channel(s.delta), dD + g * s.u)
    return du, ddelta, dB, dC, carry
