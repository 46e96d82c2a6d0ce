"""The bidirectional Mamba mixer of VideoMamba ("bimamba v2") with VideoMambaPro's switches.

  x, z = in_proj(hidden)                                   (b, l, d_inner) each
  forward:  u = silu(causal_conv(x));        y_f = scan(u, delta, A, B, C, D, z)
  backward: the same on the time-reversed sequence with its own conv, projections, A and D,
            flipped back;                    out = out_proj(y_f + y_b)
The backward branch is computed without flipping anything: its conv looks ahead instead of
back (taps reversed, as the causal conv of the flipped sequence) and the scan runs with
`reverse=True`, which the `chunked` and `pallas` algorithms walk natively.

VideoMambaPro (SPEC section 5): `bwd_mask_diagonal` masks the backward scan's diagonal,
`residual_ssm` makes both scans residual, `bwd_shares_delta` drops the backward delta
projection (dt_proj_b, x_proj_b's dt rows) and reuses the forward branch's delta.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vmp_jax.models import init
from vmp_jax.models.config import ModelConfig
from vmp_jax.ssm import selective_scan


class ScanInputs(NamedTuple):
    """One direction's selective-scan arguments, in original token order."""

    u: jax.Array  # (b, l, d_inner), compute dtype
    delta: jax.Array  # (b, l, d_inner), float32
    A: jax.Array  # (d_inner, n), float32
    B: jax.Array  # (b, l, n)
    C: jax.Array  # (b, l, n)
    D: jax.Array  # (d_inner,), float32


def depthwise_conv(x, kernel, bias, *, reverse: bool):
    """Causal depthwise conv (PyTorch Conv1d(groups=d, padding=w-1), truncated to l), or, with
    reverse, the same conv applied to the time-reversed sequence and flipped back.

    x (b, l, d); kernel (w, d): tap w-1 multiplies the current token; bias (d,).
    """
    w, l = kernel.shape[0], x.shape[1]
    pad = [(0, 0), (0, w - 1) if reverse else (w - 1, 0), (0, 0)]
    padded = jnp.pad(x, pad)  # (b, l + w - 1, d)
    kernel = kernel.astype(x.dtype)
    # causal: y_t = sum_k kernel[k] x_{t-(w-1)+k};  reverse: y_t = sum_k kernel[k] x_{t+(w-1)-k}
    taps = [kernel[k] * padded[:, (w - 1 - k if reverse else k) :][:, :l] for k in range(w)]
    return sum(taps) + bias.astype(x.dtype)


class Direction(nnx.Module):
    """One scan direction's parameters: conv, x_proj, dt_proj (unless delta is shared), A, D."""

    def __init__(self, cfg: ModelConfig, *, own_delta: bool, rngs: nnx.Rngs):
        di, n, r = cfg.d_inner, cfg.d_state, cfg.rank
        self.rank, self.n, self.own_delta = r, n, own_delta
        conv_bound = 1.0 / math.sqrt(cfg.d_conv)  # PyTorch's default for groups = channels
        self.conv_kernel = init.param(
            init.uniform(conv_bound), rngs, (cfg.d_conv, di), "conv", "inner"
        )
        self.conv_bias = init.param(init.uniform(conv_bound), rngs, (di,), "inner")
        self.x_proj = nnx.Linear(
            di,
            (r if own_delta else 0) + 2 * n,
            use_bias=False,
            dtype=cfg.compute_dtype,
            kernel_init=init.with_axes(init.trunc_normal, "inner", "proj"),
            rngs=rngs,
        )
        if own_delta:
            # float32: a small matmul whose result goes through softplus into exp(delta A).
            self.dt_proj = nnx.Linear(
                r,
                di,
                dtype=jnp.float32,
                kernel_init=init.with_axes(init.uniform(r**-0.5), "dt_rank", "inner"),
                bias_init=init.with_axes(init.dt_bias(), "inner"),
                rngs=rngs,
            )
        self.A_log = init.param(init.a_log, rngs, (di, n), "inner", "state")
        self.D = init.param(init.ones, rngs, (di,), "inner")

    def scan_inputs(self, x, *, reverse: bool, delta=None) -> ScanInputs:
        """x (b, l, d_inner) after in_proj -> this direction's scan arguments."""
        u = jax.nn.silu(
            depthwise_conv(x, self.conv_kernel[...], self.conv_bias[...], reverse=reverse)
        )
        proj = self.x_proj(u)  # (b, l, [rank +] 2n)
        if self.own_delta:
            dt, proj = proj[..., : self.rank], proj[..., self.rank :]
            delta = jax.nn.softplus(self.dt_proj(dt.astype(jnp.float32)))
        B, C = proj[..., : self.n], proj[..., self.n :]
        A = -jnp.exp(self.A_log[...].astype(jnp.float32))
        return ScanInputs(u, delta, A, B, C, self.D[...].astype(jnp.float32))


class BiMambaMixer(nnx.Module):
    """(b, l, C) -> (b, l, C): the sum of a forward and a backward selective scan."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        C, di = cfg.embed_dim, cfg.d_inner
        dense = lambda i, o, std_scale, *axes: nnx.Linear(  # noqa: E731
            i,
            o,
            use_bias=False,
            dtype=cfg.compute_dtype,
            rngs=rngs,
            kernel_init=init.with_axes(init.trunc_normal_std(0.02 * std_scale), *axes),
        )
        self.in_proj = dense(C, 2 * di, 1.0, "embed", "inner")
        self.fwd = Direction(cfg, own_delta=True, rngs=rngs)
        self.bwd = Direction(cfg, own_delta=not cfg.bwd_shares_delta, rngs=rngs)
        # Rescaled by 1/sqrt(depth) as in mamba_ssm's prenorm-residual init.
        self.out_proj = dense(di, C, 1.0 / math.sqrt(cfg.depth), "inner", "embed")

    def scan_inputs(self, hidden):
        """hidden (b, l, C) -> (forward ScanInputs, backward ScanInputs, z (b, l, d_inner))."""
        x, z = jnp.split(self.in_proj(hidden), 2, axis=-1)
        fwd = self.fwd.scan_inputs(x, reverse=False)
        bwd = self.bwd.scan_inputs(x, reverse=True, delta=fwd.delta)
        return fwd, bwd, z

    def __call__(self, hidden):
        cfg = self.cfg
        fwd, bwd, z = self.scan_inputs(hidden)
        common = dict(
            z=z,
            residual=cfg.residual_ssm,
            algorithm=cfg.scan_algorithm,
            blocks=cfg.scan_blocks,
            variant=cfg.scan_variant,
        )
        y_f = selective_scan(*fwd, **common)
        y_b = selective_scan(*bwd, reverse=True, mask_diagonal=cfg.bwd_mask_diagonal, **common)
        return self.out_proj(y_f + y_b)
