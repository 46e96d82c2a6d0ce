"""Pallas kernels for the selective scan (SPEC sections 1-4), forward and backward, fused.

One kernel instance per (batch element, block of c channels): the grid is (b, D / c). The
forward kernel streams the tokens in the scan's direction, one at a time, carrying the (c, n)
state (and the residual sum r) in registers, and saves the state entering every chunk of q
tokens ((b, L/q, D, n), as mamba_ssm). B and C rows are loaded once per token and shared by
the c channels. The D skip, the silu(z) gate, the masked diagonal, the residual SSM and the
reverse direction are all done inside: nothing is flipped, padded along time or written to HBM
besides y and the chunk states.

The backward kernel walks the chunks in reverse, each one sub-chunk of s tokens at a time from
its end: the sub-chunk's entering state is recomputed from the chunk's saved one (a rolled
loop), its s states are computed and held, and the cotangent is pulled back token by token
with the adjoint recurrences
  dh_i = g_i C_i + a_{i+1} dh_{i+1}                       (g = dL/dy, before the gate)
  dr_i = dh_{i+1} + dr_{i+1}                              (residual only)
  dw_i = dh_i - [mask] g_i C_i + a_i dr_i,   da_i = dh_i h_{i-1} + dr_i w_i.
dB and dC are sums over channels: each channel block writes its own partial (b, D/c, L, n),
summed outside (deterministic, no atomics); dA and dD are summed over the batch outside.

Default blocks (chunk 16, 32 channels, 4 warps, sub-chunk 2), from `vmp gpu-compile kernels`
at (16, 1569, 768, 16) (benchmarks/RESULTS.md): no spills on H100 or A100; forward 64 / 48
registers (50% / 62.5% occupancy), backward 125 / 128 (25%). The backward's registers follow
the states it holds at once: sub-chunk 1, 2, 4, 8 take 72, 125, 162, 254 on the H100, so 2 is
the largest that keeps 4 blocks per SM, at 3.5 recomputed token steps per token; holding a
whole unrolled chunk, as the first version did, took 255 registers and spilled 688 bytes.
The same defaults serve both targets: the figures differ by at most a few registers. Smaller
channel blocks lower registers per thread but not the channels an SM holds (registers follow
the (c, n) elements per thread), so they do not fill the last wave better (RESULTS.md).

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
from pallas_kernels.scan_chunk import VARIANTS, chunk_states, gate, make_step, readout_state

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one call (hashable: it is a nondiff argument of the VJP)."""

    length: int
    reverse: bool
    mask_diagonal: bool
    residual: bool
    gated: bool
    variant: str
    blocks: ScanBlocks  # channel_block resolved to a power of two, subchunk_size to a divisor
    interpret: bool

    @property
    def num_chunks(self) -> int:
        return pl.cdiv(self.length, self.blocks.chunk_size)


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
    return make_step(u, delta, B_ref[row, :].astype(F32), C_ref[row, :].astype(F32), A)


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


def _readouts(cfg: _Config, steps, h, r, hs, rs):
    """The states y reads, per token of a chunk entered with (h, r)."""
    h_prev, r_prev = [h, *hs[:-1]], [r, *rs[:-1]]
    return [
        readout_state(s, hp, rp, hi, mask_diagonal=cfg.mask_diagonal, residual=cfg.residual)
        for s, hp, rp, hi in zip(steps, h_prev, r_prev, hs, strict=True)
    ], h_prev


def _output(state, s, Dskip):
    """y before the gate: sum_n C[n] state[:, n] + D u, (c,)."""
    return jnp.sum(state * s.C[None, :], axis=1) + Dskip * s.u


def _forward_kernel(*refs, cfg: _Config, save_states: bool):
    """y for one (batch, channel block); optionally the (h, r) entering every chunk."""
    u_ref, delta_ref, A_ref, B_ref, C_ref, D_ref = refs[:6]
    z_ref = refs[6] if cfg.gated else None
    y_ref, *state_refs = refs[6 + cfg.gated :]
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
            reads, _ = _readouts(cfg, steps, h, r, hs, rs)
            for (row, valid), s, state in zip(tokens, steps, reads, strict=True):
                y = _output(state, s, Dskip)  # (c,)
                if cfg.gated:
                    y = gate(y, z_ref[row, :].astype(F32))[0]
                _store_row(y_ref, row, valid, y)
            h, r = hs[-1], rs[-1]
        return h, r

    zeros = jnp.zeros_like(A)
    jax.lax.fori_loop(0, cfg.num_chunks, chunk, (zeros, zeros))


def _backward_token(cfg, s, state, h_prev, g, carry, A):
    """Pull the cotangent g = dL/dy (c,) back through one token. carry = (x, dr, dA, dD) with
    x = a_{i+1} dh_{i+1}. Returns (du, ddelta, dB, dC, new carry)."""
    x, dr, dA, dD = carry
    gC = g[:, None] * s.C[None, :]  # (c, n)
    dh = gC + x
    dw = dh - gC if cfg.mask_diagonal else dh
    da = dh * h_prev
    if cfg.residual:
        dw = dw + s.a * dr
        da = da + dr * s.w
        dr = dh + dr
    dwB = jnp.sum(dw * s.B[None, :], axis=1)  # (c,)
    da_a = da * s.a
    du = dwB * s.delta
    ddelta = dwB * s.u + jnp.sum(da_a * A, axis=1)
    dB = jnp.sum(dw * (s.delta * s.u)[:, None], axis=0)  # (n,)
    dC = jnp.sum(g[:, None] * state, axis=0)  # (n,)
    carry = (s.a * dh, dr, dA + da_a * s.delta[:, None], dD + g * s.u)
    return du, ddelta, dB, dC, carry


def _backward_kernel(*refs, cfg: _Config):
    """Input cotangents for one (batch, channel block), the chunks walked in reverse."""
    u_ref, delta_ref, A_ref, B_ref, C_ref, D_ref = refs[:6]
    rest = list(refs[6:])
    z_ref = rest.pop(0) if cfg.gated else None
    dy_ref, h0_ref = rest.pop(0), rest.pop(0)
    r0_ref = rest.pop(0) if cfg.residual else None
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
        last_first = cfg.num_chunks * per_chunk - 1 - j  # >= 0: truncating division is exact
        k, i = jax.lax.div(last_first, per_chunk), jax.lax.rem(last_first, per_chunk)
        h0, r0 = h0_ref[k], (r0_ref[k] if cfg.residual else jnp.zeros_like(A))
        h, r = _advance(cfg, k * q, i * sub, h0, r0, inputs, A)
        positions = [k * q + i * sub + t for t in range(sub)]
        tokens, steps = _load_tokens(cfg, positions, inputs, A)
        hs, rs = chunk_states(steps, h, r, residual=cfg.residual, variant=cfg.variant)
        reads, h_prev = _readouts(cfg, steps, h, r, hs, rs)
        for t in reversed(range(sub)):
            (row, valid), s = tokens[t], steps[t]
            g = dy_ref[row, :].astype(F32) * valid.astype(F32)  # (c,)
            if cfg.gated:
                pre = _output(reads[t], s, Dskip)
                _, dy_dpre, dy_dz = gate(pre, z_ref[row, :].astype(F32))
                _store_row(dz_ref, row, valid, g * dy_dz)
                g = g * dy_dpre
            du, ddelta, dB, dC, carry = _backward_token(cfg, s, reads[t], h_prev[t], g, carry, A)
            _store_row(du_ref, row, valid, du + g * Dskip)
            _store_row(ddelta_ref, row, valid, ddelta)
            _store_row(dB_ref, row, valid, dB)
            _store_row(dC_ref, row, valid, dC)
        return carry

    zeros = jnp.zeros_like(A)
    carry = (zeros, zeros, zeros, jnp.zeros_like(Dskip))
    _, _, dA, dD = jax.lax.fori_loop(0, cfg.num_chunks * per_chunk, subchunk, carry)
    dA_ref[...] = dA
    dD_ref[...] = dD


def _specs(cfg: _Config, n: int):
    """BlockSpecs over the grid (b, D / c), by kind of operand."""
    c, L, K = cfg.blocks.channel_block, cfg.length, cfg.num_chunks
    return {
        "bld": pl.BlockSpec((None, L, c), lambda i, j: (i, 0, j)),  # u, delta, z, y and grads
        "bln": pl.BlockSpec((None, L, n), lambda i, j: (i, 0, 0)),  # B, C
        "dn": pl.BlockSpec((c, n), lambda i, j: (j, 0)),  # A
        "d": pl.BlockSpec((c,), lambda i, j: (j,)),  # D
        "bkdn": pl.BlockSpec((None, K, c, n), lambda i, j: (i, 0, j, 0)),  # chunk states
        "bcln": pl.BlockSpec((None, None, L, n), lambda i, j: (i, j, 0, 0)),  # dB, dC partials
        "bdn": pl.BlockSpec((None, c, n), lambda i, j: (i, j, 0)),  # dA partial
        "bd": pl.BlockSpec((None, c), lambda i, j: (i, j)),  # dD partial
    }


def _call(kernel, cfg: _Config, grid, in_specs, out_specs, out_shape, name):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.blocks.num_warps),
        interpret=cfg.interpret,
        name=name,
    )


def _forward(cfg: _Config, u, delta, A, B, C, D, z, *, save_states: bool):
    (b, _, d), n = u.shape, A.shape[1]
    c, K = cfg.blocks.channel_block, cfg.num_chunks
    s = _specs(cfg, n)
    inputs = [u, delta, A, B, C, D] + ([z] if cfg.gated else [])
    in_specs = [s["bld"], s["bld"], s["dn"], s["bln"], s["bln"], s["d"]]
    in_specs += [s["bld"]] if cfg.gated else []
    out_shape = [jax.ShapeDtypeStruct(u.shape, u.dtype)]
    out_specs = [s["bld"]]
    if save_states:
        n_saved = 2 if cfg.residual else 1
        out_shape += [jax.ShapeDtypeStruct((b, K, d, n), F32)] * n_saved
        out_specs += [s["bkdn"]] * n_saved
    kernel = functools.partial(_forward_kernel, cfg=cfg, save_states=save_states)
    outs = _call(kernel, cfg, (b, d // c), in_specs, out_specs, out_shape, "selective_scan_fwd")(
        *inputs
    )
    return outs[0], tuple(outs[1:])


def _backward(cfg: _Config, saved, dy):
    u, delta, A, B, C, D, z, states = saved
    (b, L, d), n = u.shape, A.shape[1]
    blocks = d // cfg.blocks.channel_block
    s = _specs(cfg, n)
    inputs = [u, delta, A, B, C, D] + ([z] if cfg.gated else []) + [dy, *states]
    in_specs = [s["bld"], s["bld"], s["dn"], s["bln"], s["bln"], s["d"]]
    in_specs += [s["bld"]] * cfg.gated + [s["bld"]] + [s["bkdn"]] * len(states)
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    out_shape = [like(u), like(delta)] + ([like(z)] if cfg.gated else [])
    out_shape += [jax.ShapeDtypeStruct((b, blocks, L, n), F32)] * 2
    out_shape += [jax.ShapeDtypeStruct((b, d, n), F32), jax.ShapeDtypeStruct((b, d), F32)]
    out_specs = [s["bld"]] * (2 + cfg.gated) + [s["bcln"]] * 2 + [s["bdn"], s["bd"]]
    kernel = functools.partial(_backward_kernel, cfg=cfg)
    outs = _call(kernel, cfg, (b, blocks), in_specs, out_specs, out_shape, "selective_scan_bwd")(
        *inputs
    )
    du, ddelta = outs[0], outs[1]
    dz = outs[2] if cfg.gated else None
    dB, dC, dA, dD = outs[2 + cfg.gated :]
    return (
        du,
        ddelta,
        dA.sum(0).astype(A.dtype),
        dB.sum(1).astype(B.dtype),
        dC.sum(1).astype(C.dtype),
        dD.sum(0).astype(D.dtype),
        dz,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg, u, delta, A, B, C, D, z):
    return _forward(cfg, u, delta, A, B, C, D, z, save_states=False)[0]


def _scan_fwd(cfg, u, delta, A, B, C, D, z):
    y, states = _forward(cfg, u, delta, A, B, C, D, z, save_states=True)
    return y, (u, delta, A, B, C, D, z, states)


_scan.defvjp(_scan_fwd, _backward)


def _check(u, A, variant):
    for name, x in (("u", u), ("A", A)):
        if x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(
                f"pallas selective_scan: {name} has dtype {x.dtype}; the kernels take float32, "
                "bfloat16 or float16 (state and accumulation are float32); use another "
                "algorithm for float64"
            )
    if u.ndim != 3 or A.ndim != 2 or A.shape[0] != u.shape[2]:
        raise ValueError(
            f"pallas selective_scan: u has shape {u.shape} and A {A.shape}; expected "
            "(batch, L, D) and (D, N)"
        )
    if variant not in VARIANTS:
        raise ValueError(f"pallas selective_scan: unknown variant {variant!r}; valid: {VARIANTS}")


def _pad_axis(x, axis, size):
    if x is None or x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad)


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
    """
    _check(u, A, variant)
    blocks.validate("pallas")
    (_, L, d), n = u.shape, A.shape[1]
    c = min(blocks.channel_block or pl.next_power_of_2(d), pl.next_power_of_2(d))
    blocks = dataclasses.replace(blocks, channel_block=c, subchunk_size=blocks.subchunk)
    dp, n_p = pl.cdiv(d, c) * c, pl.next_power_of_2(n)
    with_D = D if D is not None else jnp.zeros((d,), F32)
    padded = dict(
        u=_pad_axis(u, 2, dp),
        delta=_pad_axis(delta, 2, dp),
        A=_pad_axis(_pad_axis(A, 0, dp), 1, n_p),
        B=_pad_axis(B, 2, n_p),
        C=_pad_axis(C, 2, n_p),
        D=_pad_axis(with_D, 0, dp),
        z=_pad_axis(z, 2, dp),
    )
    cfg = _Config(
        L,
        bool(reverse),
        bool(mask_diagonal),
        bool(residual),
        z is not None,
        variant,
        blocks,
        jax.default_backend() != "gpu" if interpret is None else bool(interpret),
    )
    return _scan(cfg, *padded.values())[:, :, :d]


__all__ = ["VARIANTS", "selective_scan"]
