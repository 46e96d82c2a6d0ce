"""Pallas TPU (Mosaic) kernels for the selective scan (SPEC sections 1-4), forward and backward.

The TPU's counterpart of the Triton kernels (selective_scan.py), with the same per-token
arithmetic (scan_chunk.py, in its `LANES` layout) and the same options: reverse, masked
diagonal, residual SSM, D skip, silu(z) gate; float32, bfloat16 or float16 inputs, float32
state.

Layout. Channels on the 128 lanes: a state tile is (n, c), c = `ScanBlocks.tpu_channel_block`
channels (a multiple of 128, or all of D when D is smaller); u, delta, z and y come in (q, c)
blocks of q = `chunk_size` tokens (rows: sublanes), and B and C transposed by the wrapper into
(n, q) blocks, so that token t's B is the column B[:, t] that broadcasts over the lanes (a
(q, n) block would put n on the lanes and need a transpose per token).

Grid (b, D / c, L / q), the chunk axis last and "arbitrary": one core walks a (batch element,
channel block) through its chunks in the scan's direction, carrying the (n, c) state (and the
residual sum r) from chunk to chunk in VMEM scratch; the other two axes are "parallel"
(megacore chips split them between their cores). The reverse direction reads the chunks from
the last (index maps) and the tokens of a chunk from the last (static order): nothing is
flipped in HBM. A chunk is unrolled: each token's (n, c) tile is its own value.

Memory. The forward saves the (h, r) entering every chunk ((b, L/q, n, D) float32, O(L/q) as on
the GPU); the backward walks the chunks in reverse, recomputes one chunk's states from its
saved entry and pulls the cotangent back through it token by token, carrying (x, dr) =
(a_{i+1} dh_{i+1}, dr_i) between chunks in scratch and accumulating dA and dD in their output
blocks (resident across the chunk axis). dB and dC are sums over channels: each channel block
writes its part, summed outside (deterministic).

Lengths and widths that do not divide the blocks are padded with zeros by the wrapper: a padded
token has delta = 0 (a = 1, w = 0: the identity, whichever direction), a padded channel u = 0.

Backends. `interpret=None` lowers natively (Mosaic) when the program is lowered for a TPU and
runs the same kernels in Pallas' interpreter when it is lowered for anything else, chosen by
`jax.lax.platform_dependent` at lowering time: a CPU host checks the kernels, and a CPU host
compiling for compile-only TPU devices gets Mosaic's. `interpret=True` runs them in the TPU
interpreter (`pltpu.InterpretParams`: TPU memory semantics, out-of-bounds reads caught,
optionally races), which cannot share a program with Mosaic's branch (its ordered callbacks).
"""

import contextvars
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.blocks import DEFAULT_BLOCKS, ScanBlocks
from pallas_kernels.scan_chunk import (
    LANES,
    backward_token,
    chunk_readouts,
    chunk_states,
    gate,
    make_step,
    output,
)
from pallas_kernels.wrapping import check, pad_axis, saving_states_vjp

F32 = jnp.float32
LANE_WIDTH = 128
BLOCK_ROWS = 8  # a block's rows: a multiple of this (Pallas TPU), whatever the dtype
# VMEM tiles, by item size: (8, 128) for 32-bit values, (16, 128) for 16-bit ones.
SUBLANES = {4: 8, 2: 16}


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one call (hashable: it is a nondiff argument of the VJP)."""

    chunks: int  # K = padded L / q
    chunk_size: int  # q
    channel_block: int  # c
    reverse: bool
    mask_diagonal: bool
    residual: bool
    gated: bool
    variant: str
    interpret: bool | None  # None: Mosaic lowered for a TPU, else interpreted; True: TPU's
    detect_races: bool

    @property
    def options(self) -> dict:
        return {"mask_diagonal": self.mask_diagonal, "residual": self.residual}

    def block(self, k):
        """The block along the sequence of the chunk at scan position k."""
        return self.chunks - 1 - k if self.reverse else k

    @property
    def rows(self) -> list[int]:
        """A chunk's rows in scan order."""
        q = self.chunk_size
        return list(range(q - 1, -1, -1)) if self.reverse else list(range(q))


def _chunk_steps(cfg: _Config, u_ref, delta_ref, Bt_ref, Ct_ref, A):
    """The Steps of this chunk's tokens in scan order (float32, `LANES` layout)."""
    u = u_ref[...].astype(F32)  # (q, c)
    delta = delta_ref[...].astype(F32)  # (q, c)
    Bt = Bt_ref[...].astype(F32)  # (n, q)
    Ct = Ct_ref[...].astype(F32)  # (n, q)
    return [
        make_step(u[t : t + 1], delta[t : t + 1], Bt[:, t : t + 1], Ct[:, t : t + 1], A, LANES)
        for t in cfg.rows
    ]


def _forward_kernel(*refs, cfg: _Config, save_states: bool):
    """y for one (batch element, channel block, chunk); optionally the (h, r) entering it."""
    u_ref, delta_ref, A_ref, Bt_ref, Ct_ref, D_ref, *rest = refs
    z_ref = rest.pop(0) if cfg.gated else None
    y_ref = rest.pop(0)
    saved = [rest.pop(0) for _ in range(1 + cfg.residual)] if save_states else []
    h_ref, r_ref = rest  # scratch: the state entering this chunk

    @pl.when(pl.program_id(2) == 0)
    def _start():
        h_ref[...] = jnp.zeros_like(h_ref)
        r_ref[...] = jnp.zeros_like(r_ref)

    h, r = h_ref[...], r_ref[...]  # (n, c) each
    for ref, value in zip(saved, (h, r), strict=False):
        ref[...] = value
    A = A_ref[...].astype(F32)  # (n, c)
    Dskip = D_ref[...].astype(F32)  # (1, c)
    steps = _chunk_steps(cfg, u_ref, delta_ref, Bt_ref, Ct_ref, A)
    hs, rs = chunk_states(steps, h, r, residual=cfg.residual, variant=cfg.variant)
    reads, _ = chunk_readouts(steps, h, r, hs, rs, **cfg.options)
    z = z_ref[...].astype(F32) if cfg.gated else None  # (q, c)
    for row, s, state in zip(cfg.rows, steps, reads, strict=True):
        y = output(state, s, Dskip, LANES)  # (1, c)
        if cfg.gated:
            y = gate(y, z[row : row + 1])[0]
        y_ref[row : row + 1, :] = y.astype(y_ref.dtype)
    h_ref[...] = hs[-1]
    r_ref[...] = rs[-1]


def _backward_kernel(*refs, cfg: _Config):
    """Input cotangents for one (batch element, channel block, chunk), the chunks walked from
    the scan's end: the chunk's states recomputed from its saved entry, then pulled back."""
    u_ref, delta_ref, A_ref, Bt_ref, Ct_ref, D_ref, *rest = refs
    z_ref = rest.pop(0) if cfg.gated else None
    dy_ref, h0_ref = rest.pop(0), rest.pop(0)
    r0_ref = rest.pop(0) if cfg.residual else None
    du_ref, ddelta_ref = rest.pop(0), rest.pop(0)
    dz_ref = rest.pop(0) if cfg.gated else None
    dBt_ref, dCt_ref, dA_ref, dD_ref, x_ref, dr_ref = rest

    @pl.when(pl.program_id(2) == 0)
    def _start():
        for ref in (x_ref, dr_ref, dA_ref, dD_ref):
            ref[...] = jnp.zeros_like(ref)

    A = A_ref[...].astype(F32)  # (n, c)
    Dskip = D_ref[...].astype(F32)  # (1, c)
    h = h0_ref[...]
    r = r0_ref[...] if cfg.residual else jnp.zeros_like(h)
    steps = _chunk_steps(cfg, u_ref, delta_ref, Bt_ref, Ct_ref, A)
    hs, rs = chunk_states(steps, h, r, residual=cfg.residual, variant=cfg.variant)
    reads, h_prev = chunk_readouts(steps, h, r, hs, rs, **cfg.options)
    dy = dy_ref[...].astype(F32)  # (q, c)
    z = z_ref[...].astype(F32) if cfg.gated else None
    carry = (x_ref[...], dr_ref[...], dA_ref[...], dD_ref[...])
    for i in reversed(range(cfg.chunk_size)):
        row, s = cfg.rows[i], steps[i]
        g = dy[row : row + 1]  # (1, c)
        if cfg.gated:
            pre = output(reads[i], s, Dskip, LANES)
            _, dy_dpre, dy_dz = gate(pre, z[row : row + 1])
            dz_ref[row : row + 1, :] = (g * dy_dz).astype(dz_ref.dtype)
            g = g * dy_dpre
        du, ddelta, dB, dC, carry = backward_token(
            s, reads[i], h_prev[i], g, carry, A, layout=LANES, **cfg.options
        )
        du_ref[row : row + 1, :] = (du + g * Dskip).astype(du_ref.dtype)
        ddelta_ref[row : row + 1, :] = ddelta.astype(ddelta_ref.dtype)
        dBt_ref[:, row : row + 1] = dB  # (n, 1)
        dCt_ref[:, row : row + 1] = dC
    for ref, value in zip((x_ref, dr_ref, dA_ref, dD_ref), carry, strict=True):
        ref[...] = value


def _specs(cfg: _Config, n: int, *, backward: bool):
    """BlockSpecs over the grid (b, D / c, K), by kind of operand. The backward walks the
    chunks from the scan's end: grid step k is scan chunk K - 1 - k."""
    q, c, K = cfg.chunk_size, cfg.channel_block, cfg.chunks
    scan_chunk = (lambda k: K - 1 - k) if backward else (lambda k: k)  # noqa: E731
    block = lambda k: cfg.block(scan_chunk(k))  # noqa: E731
    return {
        "blc": pl.BlockSpec((None, q, c), lambda i, j, k: (i, block(k), j)),  # u, delta, z, y
        "bknq": pl.BlockSpec((None, None, n, q), lambda i, j, k: (i, block(k), 0, 0)),  # B, C
        "nc": pl.BlockSpec((n, c), lambda i, j, k: (0, j)),  # A transposed
        "1c": pl.BlockSpec((1, c), lambda i, j, k: (0, j)),  # D
        # The state entering each chunk, in scan order: (b, K, n, D).
        "bknc": pl.BlockSpec((None, None, n, c), lambda i, j, k: (i, scan_chunk(k), 0, j)),
        # dB, dC parts per channel block: (b, D / c, K, n, q).
        "bjknq": pl.BlockSpec((None, None, None, n, q), lambda i, j, k: (i, j, block(k), 0, 0)),
        "bnc": pl.BlockSpec((None, n, c), lambda i, j, k: (i, 0, j)),  # dA part per batch
        "b1c": pl.BlockSpec((None, 1, c), lambda i, j, k: (i, 0, j)),  # dD part per batch
    }


def _cost(cfg: _Config, u, n: int, operands, outputs, *, backward: bool) -> pl.CostEstimate:
    """What one call computes and moves, for XLA's scheduler: about 7 flops per (token,
    channel, state) forward (10 with the residual SSM), 3x that backward (a recomputed forward
    and the adjoint), one exp each, and a sigmoid per (token, channel) with the gate."""
    b, L, d = u.shape
    elements = b * L * d * n
    flops = (10 if cfg.residual else 7) * elements * (3 if backward else 1)
    transcendentals = elements + (b * L * d if cfg.gated else 0)
    moved = sum(x.size * x.dtype.itemsize for x in (*operands, *outputs))
    return pl.CostEstimate(flops=flops, transcendentals=transcendentals, bytes_accessed=moved)


def _tiled_bytes(shape, dtype) -> int:
    """Bytes of a VMEM buffer of `shape`: its last two dimensions padded to Mosaic's tiles
    ((8, 128) for 32-bit values, (16, 128) for 16-bit ones)."""
    itemsize = jnp.dtype(dtype).itemsize
    *lead, rows, lanes = (1, *shape) if len(shape) == 1 else shape
    rows = pl.cdiv(rows, SUBLANES.get(itemsize, 8)) * SUBLANES.get(itemsize, 8)
    lanes = pl.cdiv(lanes, LANE_WIDTH) * LANE_WIDTH
    return math.prod(lead) * rows * lanes * itemsize


def vmem_bytes(in_specs, operands, out_specs, out_shape, scratch_tiles: int, tile) -> int:
    """The VMEM a call's blocks take, two buffers each (Pallas' pipeline), and its scratch."""
    blocks = [
        2 * _tiled_bytes([d for d in spec.block_shape if d is not None], x.dtype)
        for spec, x in zip([*in_specs, *out_specs], [*operands, *out_shape], strict=True)
    ]
    return sum(blocks) + scratch_tiles * _tiled_bytes(tile, F32)


# Where `kernel_figures` collects what each call would take (None: not collecting).
_FIGURES = contextvars.ContextVar("vmp_tpu_kernel_figures", default=None)


def _call(cfg: _Config, kernel, name, operands, in_specs, out_specs, out_shape, cost):
    """The pallas_call, natively for a TPU and in the TPU interpreter elsewhere (see the
    module's docstring); two (n, c) float32 scratch tiles carry state between chunks."""
    b, _, d = operands[0].shape
    n = operands[2].shape[0]
    if (figures := _FIGURES.get()) is not None:
        tile = (n, cfg.channel_block)
        figures[name] = {
            "vmem_bytes": vmem_bytes(in_specs, operands, out_specs, out_shape, 2, tile),
            "flops": cost.flops,
            "transcendentals": cost.transcendentals,
            "bytes_accessed": cost.bytes_accessed,
        }

    def call(interpret):
        return pl.pallas_call(
            kernel,
            grid=(b, d // cfg.channel_block, cfg.chunks),
            in_specs=in_specs,
            out_specs=out_specs,
            out_shape=out_shape,
            scratch_shapes=[pltpu.VMEM((n, cfg.channel_block), F32)] * 2,
            compiler_params=pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel", "arbitrary")
            ),
            cost_estimate=cost,
            interpret=interpret,
            name=name,
        )

    if cfg.interpret is not None:
        mode = pltpu.InterpretParams(detect_races=cfg.detect_races) if cfg.interpret else False
        return call(mode)(*operands)
    # Pallas' own interpreter off a TPU: the TPU interpreter's ordered callbacks cannot sit in
    # a branch of platform_dependent beside Mosaic's effect-free call.
    return jax.lax.platform_dependent(*operands, tpu=call(False), default=call(True))


def _forward(cfg: _Config, u, delta, At, Bt, Ct, D, z, *, save_states: bool):
    (b, _, d), n = u.shape, At.shape[0]
    s = _specs(cfg, n, backward=False)
    operands = [u, delta, At, Bt, Ct, D] + ([z] if cfg.gated else [])
    in_specs = [s["blc"], s["blc"], s["nc"], s["bknq"], s["bknq"], s["1c"]]
    in_specs += [s["blc"]] * cfg.gated
    out_shape = [jax.ShapeDtypeStruct(u.shape, u.dtype)]
    out_specs = [s["blc"]]
    if save_states:
        saved = 1 + cfg.residual
        out_shape += [jax.ShapeDtypeStruct((b, cfg.chunks, n, d), F32)] * saved
        out_specs += [s["bknc"]] * saved
    kernel = functools.partial(_forward_kernel, cfg=cfg, save_states=save_states)
    cost = _cost(cfg, u, n, operands, out_shape, backward=False)
    name = "selective_scan_tpu_fwd" if save_states else "selective_scan_tpu_fwd_inference"
    outs = _call(cfg, kernel, name, operands, in_specs, out_specs, out_shape, cost)
    return outs[0], tuple(outs[1:])


def _backward(cfg: _Config, saved, dy):
    u, delta, At, Bt, Ct, D, z, states = saved
    (b, _, d), n = u.shape, At.shape[0]
    s = _specs(cfg, n, backward=True)
    operands = [u, delta, At, Bt, Ct, D] + ([z] if cfg.gated else []) + [dy, *states]
    in_specs = [s["blc"], s["blc"], s["nc"], s["bknq"], s["bknq"], s["1c"]]
    in_specs += [s["blc"]] * cfg.gated + [s["blc"]] + [s["bknc"]] * len(states)
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    blocks = d // cfg.channel_block
    out_shape = [like(u), like(delta)] + ([like(z)] if cfg.gated else [])
    out_shape += [jax.ShapeDtypeStruct((b, blocks, *Bt.shape[1:]), F32)] * 2
    out_shape += [jax.ShapeDtypeStruct((b, n, d), F32), jax.ShapeDtypeStruct((b, 1, d), F32)]
    out_specs = [s["blc"]] * (2 + cfg.gated) + [s["bjknq"]] * 2 + [s["bnc"], s["b1c"]]
    kernel = functools.partial(_backward_kernel, cfg=cfg)
    cost = _cost(cfg, u, n, operands, out_shape, backward=True)
    name = "selective_scan_tpu_bwd"
    outs = _call(cfg, kernel, name, operands, in_specs, out_specs, out_shape, cost)
    du, ddelta = outs[0], outs[1]
    dz = outs[2] if cfg.gated else None
    dBt, dCt, dA, dD = outs[2 + cfg.gated :]
    return (
        du,
        ddelta,
        dA.sum(0).astype(At.dtype),
        dBt.sum(1).astype(Bt.dtype),
        dCt.sum(1).astype(Ct.dtype),
        dD.sum(0).astype(D.dtype),
        dz,
    )


_scan = saving_states_vjp(_forward, _backward)


def kernel_figures(shape, blocks: ScanBlocks = DEFAULT_BLOCKS, dtype=jnp.bfloat16) -> dict:
    """Static figures of the kernels a training step and an inference forward run at scan
    shape (b, L, D, N), VMP's backward-scan options with the D skip and the gate, u, B, C and z
    in `dtype` (delta, A, D float32): {kernel name: {vmem_bytes (its blocks, two buffers each,
    padded to the tiles, and its scratch), flops, transcendentals, bytes_accessed (its
    pl.CostEstimate)}}. Traced abstractly (nothing runs, no TPU needed)."""
    b, L, d, n = shape
    act = jax.ShapeDtypeStruct((b, L, d), dtype)
    args = (
        act,
        jax.ShapeDtypeStruct((b, L, d), F32),
        jax.ShapeDtypeStruct((d, n), F32),
        jax.ShapeDtypeStruct((b, L, n), dtype),
        jax.ShapeDtypeStruct((b, L, n), dtype),
        jax.ShapeDtypeStruct((d,), F32),
        act,
    )
    options = {"reverse": True, "mask_diagonal": True, "residual": True, "blocks": blocks}

    def scan(*a):
        return selective_scan(*a, **options, interpret=False)

    def loss(*a):
        return jnp.sum(scan(*a).astype(F32))

    figures = {}
    token = _FIGURES.set(figures)
    try:
        jax.eval_shape(jax.grad(loss, argnums=tuple(range(7))), *args)
        jax.eval_shape(scan, *args)  # the inference forward: no states saved
    finally:
        _FIGURES.reset(token)
    return figures


def check_blocks(blocks: ScanBlocks) -> ScanBlocks:
    """`blocks` as the TPU kernels take them: ValueError naming the field otherwise (before
    Mosaic would reject the block shapes: a (q, c) block's rows a multiple of 8, its lanes of
    128, whatever the dtype)."""
    c = blocks.tpu_channel_block
    if c % LANE_WIDTH:
        raise ValueError(
            f"ScanBlocks: tpu_channel_block must be a multiple of {LANE_WIDTH} (the TPU's "
            f"lanes), got {c}"
        )
    if blocks.chunk_size % BLOCK_ROWS:
        raise ValueError(
            f"ScanBlocks: chunk_size must be a multiple of {BLOCK_ROWS} for the TPU kernels (a "
            f"chunk's tokens are the rows of a block), got {blocks.chunk_size}"
        )
    return blocks


def _by_chunk(x, chunks: int, q: int):
    """(b, K q, n) -> (b, K, n, q): each chunk's B (or C) with the tokens on the lanes."""
    b, _, n = x.shape
    return x.reshape(b, chunks, q, n).transpose(0, 1, 3, 2)


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
    detect_races: bool = False,
):
    """The selective scan of SPEC sections 1-4 as Pallas TPU kernels, differentiable (custom
    VJP). Shapes as `vmp_jax.ssm.selective_scan`: u, delta, z (b, l, d); A (d, n); B, C
    (b, l, n); D (d,). Returns y (b, l, d) in u's dtype; the state is float32.

    Args:
      blocks: the tiling: `chunk_size` tokens per chunk (a multiple of 8) and
        `tpu_channel_block` channels per kernel instance (a multiple of 128; all of D when D
        is smaller).
      variant: how a chunk's states are computed, "sequential" or "associative" (scan_chunk).
      interpret: None: Mosaic when the program is lowered for a TPU, Pallas' interpreter when
        it is lowered for anything else; True: the TPU interpreter; False: Mosaic.
      detect_races: the TPU interpreter's race detection (with interpret=True).
    """
    check(u, A, variant)
    check_blocks(blocks)
    (_, L, d), q = u.shape, blocks.chunk_size
    c = d if d <= blocks.tpu_channel_block else blocks.tpu_channel_block
    chunks, dp = pl.cdiv(L, q), pl.cdiv(d, c) * c
    Lp = chunks * q

    def channels_and_tokens(x):  # (b, L, d) -> (b, Lp, dp), zeros after
        return pad_axis(pad_axis(x, 1, Lp), 2, dp)

    with_D = D if D is not None else jnp.zeros((d,), F32)
    cfg = _Config(
        chunks,
        q,
        c,
        bool(reverse),
        bool(mask_diagonal),
        bool(residual),
        z is not None,
        variant,
        interpret,
        bool(detect_races),
    )
    y = _scan(
        cfg,
        channels_and_tokens(u),
        channels_and_tokens(delta),
        pad_axis(A, 0, dp).T,  # (n, dp)
        _by_chunk(pad_axis(B, 1, Lp), chunks, q),  # (b, K, n, q)
        _by_chunk(pad_axis(C, 1, Lp), chunks, q),
        pad_axis(with_D, 0, dp)[None, :],  # (1, dp)
        None if z is None else channels_and_tokens(z),
    )
    return y[:, :L, :d]


__all__ = ["check_blocks", "kernel_figures", "selective_scan"]
