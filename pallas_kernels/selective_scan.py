"""Pallas kernels for the selective scan (SPEC sections 1-4), forward and backward, fused.

One kernel instance per (batch element, block of c channels, segment): the grid is
(b, D / c x S). The forward kernel streams the tokens in the scan's direction, one at a time,
carrying the (c, n) state (and the residual sum r) in registers, and saves the state entering
every chunk of q tokens ((b, L/q, D, n), as mamba_ssm). B and C rows are loaded once per token
and shared by the c channels. The D skip, the silu(z) gate, the masked diagonal, the residual
SSM and the reverse direction are all done inside: nothing is flipped, padded along time or
written to HBM besides y and the chunk states.

The backward kernel walks the chunks in reverse, each one sub-chunk of s tokens at a time from
its end: the sub-chunk's entering state is recomputed from the chunk's saved one (a rolled
loop), its s states are computed and held, and the cotangent is pulled back token by token
with the adjoint recurrences
  dh_i = g_i C_i + a_{i+1} dh_{i+1}                       (g = dL/dy, before the gate)
  dr_i = dh_{i+1} + dr_{i+1}                              (residual only)
  dw_i = dh_i - [mask] g_i C_i + a_i dr_i,   da_i = dh_i h_{i-1} + dr_i w_i.
dB and dC are sums over channels: each channel block writes its own partial (b, D/c, L, n),
summed outside (deterministic, no atomics); dA and dD are summed over the batch outside.

Segments (pallas_kernels/segments.py): (b, D / c) programs alone do not fill a GPU (VMP-S at
batch 16: 384 programs, 73% of one wave on an H100 for the backward). On a GPU the sequence is
cut into S segments of whole chunks, S the fewest that give 4 waves at the most programs an SM
could hold; each segment runs from what enters it. A summary kernel per pass reduces each
segment to its affine map from zero (forward: (h, r) by `combine_residual`; backward: the
carry (x, dr) = (a_{i+1} dh_{i+1}, dr_i), walked from the segment's end, by
`combine_adjoint`), XLA composes the S maps with an associative scan, and the main kernels
start each segment from the result. The price: the summary passes read u, delta, B (forward)
and delta, dy, C, z (backward) once more. All loops have static trip counts (the last
segment runs past the end, masked): dynamic bounds, or a third grid axis, made ptxas spill
the forward kernel on sm_90a.

Default blocks (chunk 16, 32 channels, 4 warps, sub-chunk 2, segments for the GPU), from `vmp
compile kernels` at (16, 1569, 768, 16) (benchmarks/RESULTS.md), H100 / A100: 25 / 20
segments (9.1 / 7.1 waves of the forward, 18.2 / 14.2 of the backward); no spills; forward 64
/ 48 registers (50% / 62.5% occupancy), backward 126 / 96 (25% / 31%), the summaries 46-48
(62.5%). The backward's registers follow
the states it holds at once: sub-chunk 1, 2, 4, 8 take 72, 125, 162, 254 on the H100, so 2 is
the largest that keeps 4 blocks per SM, at 3.5 recomputed token steps per token; holding a
whole unrolled chunk, as the first version did, took 255 registers and spilled 688 bytes.
The same defaults serve both targets: the figures differ by at most a few registers. Smaller
channel blocks lower registers per thread but not the channels an SM holds (registers follow
the (c, n) elements per thread), so they do not fill the last wave better: segments do.

Backend: Pallas' Triton lowering (`plgpu.CompilerParams`). The work is element-wise on small
(c, n) tiles with row reductions, with no matrix products for tensor cores and no bulk copies
that TMA would speed up, which is where Mosaic GPU is clearly better on Hopper; Triton runs on
Ampere and Hopper alike and its register allocation suits the unrolled chunk. Triton needs
power-of-two tile sizes: the wrapper pads D to a multiple of c and n to a power of two with
zeros (a padded channel or state has a = 1 and w = 0 and contributes nothing).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.blocks import DEFAULT_BLOCKS, ScanBlocks
from pallas_kernels.scan_chunk import (
    VARIANTS,
    backward_token,
    chunk_readouts,
    chunk_states,
    combine_adjoint,
    combine_plain,
    combine_residual,
    gate,
    make_step,
    output,
)
from pallas_kernels.segments import chunks_per_segment, segments_wanted
from pallas_kernels.wrapping import check, pad_axis, saving_states_vjp

F32 = jnp.float32
INFERENCE_UNROLL = 2  # the inference forward's chunk, in chunks (`_inference`)


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one call (hashable: it is a nondiff argument of the VJP)."""

    length: int
    reverse: bool
    mask_diagonal: bool
    residual: bool
    gated: bool
    variant: str
    blocks: ScanBlocks  # channel_block a power of two, subchunk_size a divisor
    segment_chunks: int  # m, chunks per segment (the last segment may have fewer)
    interpret: bool

    @property
    def options(self) -> dict:
        return {"mask_diagonal": self.mask_diagonal, "residual": self.residual}

    @property
    def num_chunks(self) -> int:
        return pl.cdiv(self.length, self.blocks.chunk_size)

    @property
    def segments(self) -> int:
        return pl.cdiv(self.num_chunks, self.segment_chunks)

    @property
    def padded_chunks(self) -> int:
        """segments x segment_chunks: the last segment runs to here, past the sequence's end
        (those tokens are masked), so every loop has a static trip count (dynamic bounds
        made ptxas spill the forward kernel)."""
        return self.segments * self.segment_chunks


def _first_chunk(cfg: _Config):
    """The first chunk of this program's segment (innermost in the grid's second axis)."""
    if cfg.segments == 1:
        return 0
    return jax.lax.rem(pl.program_id(1), cfg.segments) * cfg.segment_chunks


def _token(cfg: _Config, position):
    """(row, valid) of the token at `position` in scan order; rows past the end are clamped
    (their loads are zeroed and their stores masked)."""
    valid = position < cfg.length
    row = cfg.length - 1 - position if cfg.reverse else position
    return jnp.clip(row, 0, cfg.length - 1), valid


def _load_step(row, valid, u_ref, delta_ref, B_ref, C_ref, A):
    keep = valid.astype(F32)
    u = u_ref[row, :].astype(F32) * keep  # (c,)
    delta = delta_ref[row, :].astype(F32) * keep  # (c,): 0 makes the step the identity
    C = None if C_ref is None else C_ref[row, :].astype(F32)  # the summary pass reads no C
    return make_step(u, delta, B_ref[row, :].astype(F32), C, A)


def _store_row(ref, row, valid, value):
    plgpu.store(ref.at[row], value.astype(ref.dtype), mask=jnp.full(value.shape, valid))


def _load_tokens(cfg: _Config, positions, refs, A):
    """The tokens at `positions` (scan order): ([(row, valid)], [Step]); A (c, n) float32."""
    u_ref, delta_ref, B_ref, C_ref = refs
    tokens = [_token(cfg, p) for p in positions]
    steps = [_load_step(row, valid, u_ref, delta_ref, B_ref, C_ref, A) for row, valid in tokens]
    return tokens, steps


def _advance(cfg: _Config, start, count, h, r, refs, A):
    """(h, r) after the `count` tokens from scan position `start`, one at a time in a rolled
    loop (count may be traced), nothing kept."""

    def step(t, carry):
        _, (s,) = _load_tokens(cfg, [start + t], refs, A)
        (h,), (r,) = chunk_states([s], *carry, residual=cfg.residual, variant="sequential")
        return h, r

    return jax.lax.fori_loop(0, count, step, (h, r))


def _forward_kernel(*refs, cfg: _Config, save_states: bool):
    """y for one (batch, channel block, segment); optionally the (h, r) entering every chunk.
    Split into segments, it starts from the (h, r) entering its segment (`_segment_entries`)."""
    u_ref, delta_ref, A_ref, B_ref, C_ref, D_ref, *rest = refs
    z_ref = rest.pop(0) if cfg.gated else None
    enter_ref = rest.pop(0) if cfg.segments > 1 else None
    y_ref, *state_refs = rest
    A = A_ref[...].astype(F32)  # (c, n)
    Dskip = D_ref[...].astype(F32)  # (c,)
    q, inputs = cfg.blocks.chunk_size, (u_ref, delta_ref, B_ref, C_ref)

    def chunk(k, carry):
        h, r = carry  # (c, n) each
        if save_states:
            state_refs[0][k] = h
            if cfg.residual:
                state_refs[1][k] = r
        # The sequential variant streams token by token; the associative one scans sub-chunks.
        width = 1 if cfg.variant == "sequential" else cfg.blocks.subchunk_size
        for start in range(0, q, width):
            offsets = range(start, start + width)
            tokens, steps = _load_tokens(cfg, [k * q + i for i in offsets], inputs, A)
            hs, rs = chunk_states(steps, h, r, residual=cfg.residual, variant=cfg.variant)
            reads, _ = chunk_readouts(steps, h, r, hs, rs, **cfg.options)
            for (row, valid), s, state in zip(tokens, steps, reads, strict=True):
                y = output(state, s, Dskip)  # (c,)
                if cfg.gated:
                    y = gate(y, z_ref[row, :].astype(F32))[0]
                _store_row(y_ref, row, valid, y)
            h, r = hs[-1], rs[-1]
        return h, r

    first = _first_chunk(cfg)
    jax.lax.fori_loop(
        0,
        cfg.segment_chunks,
        lambda t, carry: chunk(first + t, carry),
        _entering(cfg, enter_ref, A),
    )


def _entering(cfg: _Config, enter_ref, A):
    """The two (c, n) tiles a segment starts from, (h, r) or (x, dr): loaded when split (one
    (T, c, n) block: a second operand for r made ptxas spill the backward), else zeros."""
    zeros = jnp.zeros_like(A)
    if enter_ref is None:
        return zeros, zeros
    return enter_ref[0].astype(F32), enter_ref[1].astype(F32) if cfg.residual else zeros


def _summary_kernel(*refs, cfg: _Config, adjoint: bool):
    """One segment's affine map from zero (the forward's over (h, r), or with `adjoint` the
    backward's over (x, dr), walked in reverse), as the tiles of its combine operator.

    Forward, per token: (a, keep, w, a w) by `combine_residual` ((a, w) by `combine_plain`);
    backward, per token from the segment's end: (a, keep, a gC, gC) by `combine_adjoint`
    ((a, a gC) by `combine_plain`). keep = 0 past the sequence's end makes those tokens the
    identity.
    """
    n_in = 4 + (cfg.gated if adjoint else 0)  # (u, delta, A, B) or (delta, dy, A, C[, z])
    inputs, out_refs = refs[:n_in], refs[n_in:]
    A = inputs[2][...].astype(F32)  # (c, n)
    first, q = _first_chunk(cfg), cfg.blocks.chunk_size
    end = first + cfg.segment_chunks
    combine = _SUMMARY_COMBINE[adjoint, cfg.residual]
    ones, zeros = jnp.ones_like(A), jnp.zeros_like(A)
    identity = (ones, zeros, zeros, zeros) if cfg.residual else (ones, zeros)

    def token(t, acc):
        if adjoint:
            elem = _adjoint_element(cfg, inputs, end * q - 1 - t, A)
        else:
            u_ref, delta_ref, _, B_ref = inputs
            loads = (u_ref, delta_ref, B_ref, None)  # C is not read
            ((_, valid),), (s,) = _load_tokens(cfg, [first * q + t], loads, A)
            keep = jnp.full(A.shape, valid.astype(F32))
            elem = (s.a, keep, s.w, s.a * s.w) if cfg.residual else (s.a, s.w)
        return combine(acc, elem)

    summary = jax.lax.fori_loop(0, cfg.segment_chunks * q, token, identity)
    for ref, tile in zip(out_refs, summary, strict=True):
        ref[...] = tile


def _adjoint_element(cfg: _Config, inputs, position, A):
    """The backward carry's map through the token at scan `position`: x' = a (x + gC),
    dr' = dr + keep (x + gC), as the tiles of `combine_adjoint` (or `combine_plain`)."""
    delta_ref, dy_ref, _, C_ref = inputs[:4]
    row, valid = _token(cfg, position)
    keep = valid.astype(F32)
    delta = delta_ref[row, :].astype(F32) * keep  # (c,)
    a = jnp.exp(delta[:, None] * A)  # (c, n)
    g = dy_ref[row, :].astype(F32) * keep  # (c,)
    if cfg.gated:
        g = g * gate(jnp.zeros_like(g), inputs[4][row, :].astype(F32))[1]  # silu(z)
    gC = g[:, None] * C_ref[row, :].astype(F32)[None, :]  # (c, n)
    if cfg.residual:
        return a, jnp.full(A.shape, keep), a * gC, gC
    return a, a * gC


def _backward_kernel(*refs, cfg: _Config):
    """Input cotangents for one (batch, channel block, segment), the chunks walked in reverse;
    split into segments, from the carry (x, dr) entering the segment's end."""
    u_ref, delta_ref, A_ref, B_ref, C_ref, D_ref = refs[:6]
    rest = list(refs[6:])
    z_ref = rest.pop(0) if cfg.gated else None
    dy_ref, h0_ref = rest.pop(0), rest.pop(0)
    r0_ref = rest.pop(0) if cfg.residual else None
    enter_ref = rest.pop(0) if cfg.segments > 1 else None
    du_ref, ddelta_ref = rest.pop(0), rest.pop(0)
    dz_ref = rest.pop(0) if cfg.gated else None
    dB_ref, dC_ref, dA_ref, dD_ref = rest
    A = A_ref[...].astype(F32)  # (c, n)
    Dskip = D_ref[...].astype(F32)  # (c,)

    q, sub = cfg.blocks.chunk_size, cfg.blocks.subchunk_size
    inputs, per_chunk = (u_ref, delta_ref, B_ref, C_ref), q // sub

    def subchunk(j, carry):
        # Sub-chunk i of chunk k, the last first: its entering state is recomputed from the
        # chunk's saved one (a rolled loop), so only one sub-chunk's states are ever live.
        last_first = end * per_chunk - 1 - j  # >= 0: truncating division is exact
        k, i = jax.lax.div(last_first, per_chunk), jax.lax.rem(last_first, per_chunk)
        h0, r0 = h0_ref[k], (r0_ref[k] if cfg.residual else jnp.zeros_like(A))
        h, r = _advance(cfg, k * q, i * sub, h0, r0, inputs, A)
        positions = [k * q + i * sub + t for t in range(sub)]
        tokens, steps = _load_tokens(cfg, positions, inputs, A)
        hs, rs = chunk_states(steps, h, r, residual=cfg.residual, variant=cfg.variant)
        reads, h_prev = chunk_readouts(steps, h, r, hs, rs, **cfg.options)
        for t in reversed(range(sub)):
            (row, valid), s = tokens[t], steps[t]
            g = dy_ref[row, :].astype(F32) * valid.astype(F32)  # (c,)
            if cfg.gated:
                pre = output(reads[t], s, Dskip)
                _, dy_dpre, dy_dz = gate(pre, z_ref[row, :].astype(F32))
                _store_row(dz_ref, row, valid, g * dy_dz)
                g = g * dy_dpre
            du, ddelta, dB, dC, carry = backward_token(
                s, reads[t], h_prev[t], g, carry, A, **cfg.options
            )
            _store_row(du_ref, row, valid, du + g * Dskip)
            _store_row(ddelta_ref, row, valid, ddelta)
            _store_row(dB_ref, row, valid, dB)
            _store_row(dC_ref, row, valid, dC)
        return carry

    end = _first_chunk(cfg) + cfg.segment_chunks  # one past the segment's last chunk
    carry = (*_entering(cfg, enter_ref, A), jnp.zeros_like(A), jnp.zeros_like(Dskip))
    _, _, dA, dD = jax.lax.fori_loop(0, cfg.segment_chunks * per_chunk, subchunk, carry)
    dA_ref[...] = dA
    dD_ref[...] = dD


def _specs(cfg: _Config, n: int):
    """BlockSpecs over the grid (b, D / c x segments), by kind of operand. The grid's second
    axis is (channel block, segment), segments innermost: a third grid axis made ptxas spill
    the forward kernel on sm_90a."""
    c, L, K, S = cfg.blocks.channel_block, cfg.length, cfg.padded_chunks, cfg.segments
    blk = (lambda j: j) if S == 1 else (lambda j: j // S)  # noqa: E731
    seg = (lambda j: 0) if S == 1 else (lambda j: j % S)  # noqa: E731
    return {
        "bld": pl.BlockSpec((None, L, c), lambda i, j: (i, 0, blk(j))),  # u, delta, z, y, grads
        "bln": pl.BlockSpec((None, L, n), lambda i, j: (i, 0, 0)),  # B, C
        "dn": pl.BlockSpec((c, n), lambda i, j: (blk(j), 0)),  # A
        "d": pl.BlockSpec((c,), lambda i, j: (blk(j),)),  # D
        "bkdn": pl.BlockSpec((None, K, c, n), lambda i, j: (i, 0, blk(j), 0)),  # chunk states
        "bcln": pl.BlockSpec((None, None, L, n), lambda i, j: (i, blk(j), 0, 0)),  # dB, dC parts
        "bsdn": pl.BlockSpec((None, None, c, n), lambda i, j: (i, seg(j), blk(j), 0)),  # per seg.
        "bsd": pl.BlockSpec((None, None, c), lambda i, j: (i, seg(j), blk(j))),  # dD part
        # What enters each segment: (b, S, T, D, n), T = 2 tiles with the residual SSM, else 1.
        "bstdn": pl.BlockSpec(
            (None, None, 1 + cfg.residual, c, n), lambda i, j: (i, seg(j), 0, blk(j), 0)
        ),
    }


def _call(kernel, cfg: _Config, batch, d, in_specs, out_specs, out_shape, name):
    return pl.pallas_call(
        kernel,
        grid=(batch, d // cfg.blocks.channel_block * cfg.segments),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.blocks.num_warps),
        interpret=cfg.interpret,
        name=name,
    )


# The combine operator of a segment's summary, by (adjoint, residual).
_SUMMARY_COMBINE = {
    (False, False): combine_plain,
    (False, True): combine_residual,
    (True, False): combine_plain,
    (True, True): combine_adjoint,
}


def _segment_entries(cfg: _Config, inputs, in_specs, *, adjoint: bool, name: str):
    """What enters every segment, [(b, S, T, D, n) float32]: the forward's (h[, r]) in scan
    order, or with `adjoint` the backward's (x[, dr]) from the sequence's end. [] unsplit.

    Each segment's summary (its map from zero) comes from `_summary_kernel`; the maps are
    composed over the S segments by XLA (an associative scan, small: S tiles per row), and
    applied to the zero that enters the first (last) segment: that leaves their p and q."""
    if cfg.segments == 1:
        return []
    b, _, d = inputs[0].shape
    n = inputs[2].shape[1]
    s = _specs(cfg, n)
    tiles = 4 if cfg.residual else 2
    shape = jax.ShapeDtypeStruct((b, cfg.segments, d, n), F32)
    kernel = functools.partial(_summary_kernel, cfg=cfg, adjoint=adjoint)
    name = f"{name}_summary"  # the summary kernel of the pass `name`
    summaries = _call(kernel, cfg, b, d, in_specs, [s["bsdn"]] * tiles, [shape] * tiles, name)(
        *inputs
    )
    combine = _SUMMARY_COMBINE[adjoint, cfg.residual]
    prefix = jax.lax.associative_scan(combine, tuple(summaries), axis=1, reverse=adjoint)
    applied = prefix[2:] if cfg.residual else prefix[1:]  # (p, q) or (p,): from zero
    shift = (0, 1) if adjoint else (1, 0)  # the value entering a segment leaves its neighbour
    pad = [(0, 0), shift, (0, 0), (0, 0)]
    shifted = [jnp.pad(x, pad)[:, 1:] if adjoint else jnp.pad(x, pad)[:, :-1] for x in applied]
    return [jnp.stack(shifted, axis=2)]


def _inference(cfg: _Config) -> _Config:
    """The tiling of the inference forward: chunks of INFERENCE_UNROLL x q tokens, as many
    segments. It saves nothing per chunk, so a chunk is only how many tokens it unrolls: at 16
    ptxas gave the kernel 48 registers and spilled 8 bytes on sm_90a, at 32 it takes 56 and
    spills nothing (A100: 48, none, both); `vmp compile kernels` reports it."""
    q = cfg.blocks.chunk_size * INFERENCE_UNROLL
    chunks = pl.cdiv(cfg.length, q)
    blocks = dataclasses.replace(cfg.blocks, chunk_size=q)
    return dataclasses.replace(
        cfg, blocks=blocks, segment_chunks=chunks_per_segment(chunks, cfg.segments)
    )


def _forward(cfg: _Config, u, delta, A, B, C, D, z, *, save_states: bool):
    (b, _, d), n = u.shape, A.shape[1]
    cfg = cfg if save_states else _inference(cfg)
    K = cfg.padded_chunks
    s = _specs(cfg, n)
    # The forward of a training step saves the chunk states; the inference forward (vmp eval,
    # vmp predict) does not, and is a kernel of its own (its own registers and spills).
    name = "selective_scan_fwd" if save_states else "selective_scan_fwd_inference"
    entries = _segment_entries(
        cfg, [u, delta, A, B], [s["bld"], s["bld"], s["dn"], s["bln"]], adjoint=False, name=name
    )
    inputs = [u, delta, A, B, C, D] + ([z] if cfg.gated else []) + entries
    in_specs = [s["bld"], s["bld"], s["dn"], s["bln"], s["bln"], s["d"]]
    in_specs += [s["bld"]] * cfg.gated + [s["bstdn"]] * len(entries)
    out_shape = [jax.ShapeDtypeStruct(u.shape, u.dtype)]
    out_specs = [s["bld"]]
    if save_states:
        n_saved = 2 if cfg.residual else 1
        out_shape += [jax.ShapeDtypeStruct((b, K, d, n), F32)] * n_saved
        out_specs += [s["bkdn"]] * n_saved
    kernel = functools.partial(_forward_kernel, cfg=cfg, save_states=save_states)
    outs = _call(kernel, cfg, b, d, in_specs, out_specs, out_shape, name)(*inputs)
    return outs[0], tuple(outs[1:])


def _backward(cfg: _Config, saved, dy):
    u, delta, A, B, C, D, z, states = saved
    (b, L, d), n = u.shape, A.shape[1]
    blocks, S = d // cfg.blocks.channel_block, cfg.segments
    s = _specs(cfg, n)
    summary_in = [delta, dy, A, C] + ([z] if cfg.gated else [])
    entries = _segment_entries(
        cfg,
        summary_in,
        [s["bld"], s["bld"], s["dn"], s["bln"]] + [s["bld"]] * cfg.gated,
        adjoint=True,
        name="selective_scan_bwd",
    )
    inputs = [u, delta, A, B, C, D] + ([z] if cfg.gated else []) + [dy, *states, *entries]
    in_specs = [s["bld"], s["bld"], s["dn"], s["bln"], s["bln"], s["d"]]
    in_specs += [s["bld"]] * cfg.gated + [s["bld"]] + [s["bkdn"]] * len(states)
    in_specs += [s["bstdn"]] * len(entries)
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    out_shape = [like(u), like(delta)] + ([like(z)] if cfg.gated else [])
    out_shape += [jax.ShapeDtypeStruct((b, blocks, L, n), F32)] * 2
    out_shape += [jax.ShapeDtypeStruct((b, S, d, n), F32), jax.ShapeDtypeStruct((b, S, d), F32)]
    out_specs = [s["bld"]] * (2 + cfg.gated) + [s["bcln"]] * 2 + [s["bsdn"], s["bsd"]]
    kernel = functools.partial(_backward_kernel, cfg=cfg)
    outs = _call(kernel, cfg, b, d, in_specs, out_specs, out_shape, "selective_scan_bwd")(*inputs)
    du, ddelta = outs[0], outs[1]
    dz = outs[2] if cfg.gated else None
    dB, dC, dA, dD = outs[2 + cfg.gated :]
    return (
        du,
        ddelta,
        dA.sum((0, 1)).astype(A.dtype),
        dB.sum(1).astype(B.dtype),
        dC.sum(1).astype(C.dtype),
        dD.sum((0, 1)).astype(D.dtype),
        dz,
    )


_scan = saving_states_vjp(_forward, _backward)


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    *,
    reverse: bool = False,
    mask_diagonal: bool = False,
    residual: bool = False,
    blocks: ScanBlocks = DEFAULT_BLOCKS,
    variant: str = "sequential",
    interpret: bool | None = None,
    sm_count: int | None = None,
):
    """The selective scan of SPEC sections 1-4 as Pallas kernels, differentiable (custom VJP).

    Shapes as `vmp_jax.ssm.selective_scan`: u, delta, z (b, l, d); A (d, n); B, C (b, l, n);
    D (d,). Returns y (b, l, d) in u's dtype; the state is float32.

    Args:
      blocks: the kernel tiling (`ScanBlocks`: chunk, channel block, warps, sub-chunk).
      variant: how a chunk's states are computed: "sequential" (token after token) or
        "associative" (a parallel prefix scan over the chunk's affine maps).
      interpret: run the kernels in Pallas' interpreter (any backend; slow, for tests). None:
        natively on a GPU, interpreted elsewhere.
      sm_count: the SMs of the GPU compiled for, which `blocks.segments=None` splits the
        sequence for (pallas_kernels/segments.py); None: jax's first device's when it is a
        GPU. Interpreted, nothing is split unless `blocks.segments` says so.
    """
    check(u, A, variant)
    blocks.validate("pallas")
    (_, L, d), n = u.shape, A.shape[1]
    c = min(blocks.channel_block or pl.next_power_of_2(d), pl.next_power_of_2(d))
    blocks = dataclasses.replace(blocks, channel_block=c, subchunk_size=blocks.subchunk)
    dp, n_p = pl.cdiv(d, c) * c, pl.next_power_of_2(n)
    num_chunks = pl.cdiv(L, blocks.chunk_size)
    interpret = jax.default_backend() != "gpu" if interpret is None else bool(interpret)
    sms = None if interpret else sm_count or getattr(jax.devices()[0], "core_count", None)
    segments = blocks.segments or segments_wanted(u.shape[0] * dp // c, blocks.num_warps, sms)
    with_D = D if D is not None else jnp.zeros((d,), F32)
    padded = dict(
        u=pad_axis(u, 2, dp),
        delta=pad_axis(delta, 2, dp),
        A=pad_axis(pad_axis(A, 0, dp), 1, n_p),
        B=pad_axis(B, 2, n_p),
        C=pad_axis(C, 2, n_p),
        D=pad_axis(with_D, 0, dp),
        z=pad_axis(z, 2, dp),
    )
    cfg = _Config(
        L,
        bool(reverse),
        bool(mask_diagonal),
        bool(residual),
        z is not None,
        variant,
        blocks,
        chunks_per_segment(num_chunks, segments),
        interpret,
    )
    return _scan(cfg, *padded.values())[:, :, :d]


__all__ = ["VARIANTS", "selective_scan"]
