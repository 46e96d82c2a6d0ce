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
    by 1 / (1 - rate). Identity when deterministic (`model.eval()`) or rate = 0."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = rate
        self.deterministic = False
        self.rngs = rngs.fork() if rate > 0 else None

    def __call__(self, x):
        if self.deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Block(nnx.Module):
    """(hidden, residual) -> (hidden, residual); residual is float32 (b, l, C)."""

    def __init__(self, cfg: ModelConfig, drop_path: float, *, rngs: nnx.Rngs):
        self.compute_dtype = cfg.compute_dtype
        self.norm = RMSNorm(cfg.embed_dim, rngs=rngs)
        self.mixer = BiMambaMixer(cfg, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, hidden, residual):
        if residual is None:
            residual = hidden.astype(jnp.float32)
        else:
            residual = residual + self.drop_path(hidden).astype(jnp.float32)
        return self.mixer(self.norm(residual).astype(self.compute_dtype)), residual
