"""FLOPs of one forward view, from XLA's cost analysis.

XLA counts a loop body once, whatever its trip count, so the model is analysed with the
`sequential` scan (one lax.scan per direction and block) and the remaining L - 1 iterations of
each scan are added as L - 1 times the cost of its step, also from XLA's cost analysis. XLA
counts a multiply-add as two FLOPs; fvcore, behind the papers' "FLOPs", counts one, so the
papers' figures compare with our GMACs = FLOPs / 2.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from vmp_jax.models.config import ModelConfig
from vmp_jax.models.videomamba import VideoMamba
from vmp_jax.ssm import sequential


def _flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def scan_step_flops(cfg: ModelConfig, *, mask_diagonal: bool, residual: bool) -> float:
    """XLA's FLOPs of one token of one scan direction at batch 1."""
    d, n = cfg.d_inner, cfg.d_state
    zeros = jnp.zeros((1, d, n))
    carry = (zeros, zeros) if residual else (zeros,)
    x = (jnp.ones((1, d)), jnp.ones((1, d)), jnp.ones((1, n)), jnp.ones((1, n)))
    step = partial(sequential.step, mask_diagonal=mask_diagonal, residual=residual)
    return _flops(step, carry, x, -jnp.ones((d, n)))


def forward_flops(cfg: ModelConfig, frames: int | None = None, img_size: int | None = None):
    """FLOPs of one view (batch 1) of `frames` x `img_size`^2 (the config's by default)."""
    # XLA counts a loop body once: the sequential scan's steps are added below, and the
    # blocks are analysed unrolled.
    cfg = dataclasses.replace(cfg, scan_algorithm="sequential", scan_layers=False)
    frames, img_size = frames or cfg.num_frames, img_size or cfg.img_size
    graph, state = nnx.split(nnx.eval_shape(lambda: VideoMamba(cfg, rngs=nnx.Rngs(0))))

    def forward(state, video):
        model = nnx.merge(graph, state)
        model.eval()
        return model(video)

    video = jax.ShapeDtypeStruct((1, frames, img_size, img_size, cfg.channels), jnp.float32)
    model = _flops(forward, state, video)
    tokens = 1 + frames * (img_size // cfg.patch_size) ** 2
    steps = cfg.depth * (tokens - 1)
    fwd = scan_step_flops(cfg, mask_diagonal=False, residual=cfg.residual_ssm)
    bwd = scan_step_flops(cfg, mask_diagonal=cfg.bwd_mask_diagonal, residual=cfg.residual_ssm)
    return model + steps * (fwd + bwd)
