"""A pre-norm Mamba block with a float32 residual stream, as VideoMamba's `Block`:

residual = residual + drop_path(hidden)   (the first block: residual = hidden)
hidden   = mixer(RMSNorm(residual))
"""

import jax
import jax.numpy as jnp
from flax import nnx

from vmp_jax.models import init
from vmp_jax.models.config import ModelConfig
from vmp_jax.models.mixer import BiMambaMixer


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32; weight only, no bias."""

    def __init__(self, dim: int, *, eps: float = 1e-5, rngs: nnx.Rngs):
        self.eps = eps
        self.weight = init.param(init.ones, rngs, (dim,), "embed")

    def __call__(self, x):
        x = x.astype(jnp.float32)
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.weight


class DropPath(nnx.Module):
    """Stochastic depth: zero a whole sample's branch with probability `rate`, scale the rest
    by 1 / (1 - rate). The rate is a call argument, not an attribute, so that blocks of
    different rates share one graph and can run as one scan (`ModelConfig.scan_layers`).
    Identity when deterministic (`model.eval()`) or built inactive (rate 0: no RNG stream)."""

    def __init__(self, active: bool, *, rngs: nnx.Rngs):
        self.deterministic = False
        self.rngs = rngs.fork() if active else None

    def __call__(self, x, rate):
        if self.deterministic or self.rngs is None:
            return x
        keep = 1.0 - jnp.asarray(rate, jnp.float32)  # the same float32 for a Python or traced rate
        mask = jax.random.bernoulli(self.rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep.astype(x.dtype), 0.0).astype(x.dtype)


class Block(nnx.Module):
    """(hidden, residual, drop-path rate) -> (hidden, residual); residual is float32 (b, l, C),
    None before the first block. `drop_path`: whether the block has one (an RNG stream)."""

    def __init__(self, cfg: ModelConfig, drop_path: bool, *, rngs: nnx.Rngs):
        self.compute_dtype = cfg.compute_dtype
        self.norm = RMSNorm(cfg.embed_dim, rngs=rngs)
        self.mixer = BiMambaMixer(cfg, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, hidden, residual, drop_rate=0.0):
        if residual is None:
            residual = hidden.astype(jnp.float32)
        else:
            residual = residual + self.drop_path(hidden, drop_rate).astype(jnp.float32)
        return self.mixer(self.norm(residual).astype(self.compute_dtype)), residual
