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


def _flops(fn, *args, compiled: bool = True) -> float:
    """XLA's FLOPs of fn(*args): of the compiled program, or (compiled=False) of the program
    before XLA's optimisations, which count every operation once."""
    lowered = jax.jit(fn).lower(*args)
    return float((lowered.compile() if compiled else lowered).cost_analysis()["flops"])


def scan_step_flops(
    cfg: ModelConfig, *, mask_diagonal: bool, residual: bool, compiled: bool = True
) -> float:
    """XLA's FLOPs of one token of one scan direction at batch 1."""
    d, n = cfg.d_inner, cfg.d_state
    zeros = jnp.zeros((1, d, n))
    carry = (zeros, zeros) if residual else (zeros,)
    x = (jnp.ones((1, d)), jnp.ones((1, d)), jnp.ones((1, n)), jnp.ones((1, n)))
    step = partial(sequential.step, mask_diagonal=mask_diagonal, residual=residual)
    return _flops(step, carry, x, -jnp.ones((d, n)), compiled=compiled)


def model_flops(cfg: ModelConfig, frames: int, img_size: int, *, compiled: bool = True) -> float:
    """XLA's FLOPs of one view (batch 1), the blocks unrolled and whatever the config's scan
    algorithm counts (a `sequential` scan: one step, its loop body)."""
    cfg = dataclasses.replace(cfg, scan_layers=False)
    graph, state = nnx.split(nnx.eval_shape(lambda: VideoMamba(cfg, rngs=nnx.Rngs(0))))

    def forward(state, video):
        model = nnx.merge(graph, state)
        model.eval()
        return model(video)

    video = jax.ShapeDtypeStruct((1, frames, img_size, img_size, cfg.channels), jnp.float32)
    return _flops(forward, state, video, compiled=compiled)


def forward_flops(
    cfg: ModelConfig,
    frames: int | None = None,
    img_size: int | None = None,
    *,
    compiled: bool = True,
) -> float:
    """FLOPs of one view (batch 1) of `frames` x `img_size`^2 (the config's by default):
    the model with `sequential` scans, whose loop bodies XLA counts once, plus every scan's
    other L - 1 steps. `compiled`: count the compiled program (what `vmp flops` prints) or
    the program before XLA's optimisations."""
    cfg = dataclasses.replace(cfg, scan_algorithm="sequential")
    frames, img_size = frames or cfg.num_frames, img_size or cfg.img_size
    model = model_flops(cfg, frames, img_size, compiled=compiled)
    tokens = 1 + frames * (img_size // cfg.patch_size) ** 2
    steps = cfg.depth * (tokens - 1)
    step = partial(scan_step_flops, cfg, residual=cfg.residual_ssm, compiled=compiled)
    return model + steps * (step(mask_diagonal=False) + step(mask_diagonal=cfg.bwd_mask_diagonal))
