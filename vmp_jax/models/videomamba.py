"""`VideoMamba`: the classifier of SPEC section 5 (VideoMambaPro when its switches are on).

tokens = Embedding(video)                       (b, 1 + T*P, C)
hidden, residual = Block_i(hidden, residual)    for each of `depth` blocks
logits = head(dropout(norm_f(residual + drop_path(hidden))[:, 0]))
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmp_jax.models import init
from vmp_jax.models.block import Block, DropPath, RMSNorm
from vmp_jax.models.config import ModelConfig
from vmp_jax.models.embed import Embedding


def drop_path_rates(cfg: ModelConfig) -> list[float]:
    """Per block, the rate of the drop path on its incoming branch, then the final one's: the
    rates rise linearly from 0 to the maximum over the depth, shifted by one block (block 0
    has no incoming branch), as VideoMamba's `inter_dpr`."""
    rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth).tolist()
    return [0.0, *rates[:-1], cfg.drop_path_rate]


class VideoMamba(nnx.Module):
    """video (b, T, H, W, 3), float in any dtype -> logits (b, num_classes) float32.

    Parameters are float32 with logical axis names (`nnx.get_partition_spec`); compute runs in
    `cfg.dtype`, the residual stream and the scan state in float32. `model.eval()` turns off
    drop path and dropout; training needs `nnx.Rngs(params=..., dropout=...)`.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embedding(cfg, rngs=rngs)
        rates = drop_path_rates(cfg)
        self.layers = nnx.List([Block(cfg, rates[i], rngs=rngs) for i in range(cfg.depth)])
        self.drop_path = DropPath(rates[-1], rngs=rngs)
        self.norm_f = RMSNorm(cfg.embed_dim, rngs=rngs)
        self.head_drop = nnx.Dropout(cfg.head_dropout, rngs=rngs)
        self.head = nnx.Linear(
            cfg.embed_dim,
            cfg.num_classes,
            rngs=rngs,
            kernel_init=init.with_axes(init.trunc_normal, "embed", "classes"),
            bias_init=init.with_axes(init.zeros, "classes"),
        )

    def features(self, video, *, upto: int | None = None):
        """(hidden, residual) after the first `upto` blocks (all by default)."""
        hidden, residual = self.embed(video), None
        for block in self.layers[: self.cfg.depth if upto is None else upto]:
            if self.cfg.remat:
                hidden, residual = nnx.remat(lambda blk, h, r: blk(h, r))(block, hidden, residual)
            else:
                hidden, residual = block(hidden, residual)
        return hidden, residual

    def __call__(self, video):
        hidden, residual = self.features(video)
        residual = residual + self.drop_path(hidden).astype(jnp.float32)
        cls = self.norm_f(residual)[:, 0]  # (b, C) float32
        return self.head(self.head_drop(cls)).astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
    """The exact number of parameter scalars."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract_params(cfg: ModelConfig) -> dict[tuple, nnx.Variable]:
    """{path: abstract Param} of the model `cfg` describes (shapes only, nothing allocated);
    paths as nnx.to_flat_state gives them, e.g. ("layers", 0, "mixer", "fwd", "A_log")."""
    abstract = nnx.eval_shape(lambda: VideoMamba(cfg, rngs=nnx.Rngs(0)))
    return dict(nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
