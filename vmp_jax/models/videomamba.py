"""`VideoMamba`: the classifier of SPEC section 5 (VideoMambaPro when its switches are on).

tokens = Embedding(video)                       (b, 1 + T*P, C)
hidden, residual = Block_i(hidden, residual)    for each of `depth` blocks
logits = head(dropout(norm_f(residual + drop_path(hidden))[:, 0]))

With `cfg.scan_layers` the blocks' weights are stacked on a leading "layers" axis and the blocks
run as one `nnx.scan`: one block is traced and compiled instead of `depth`, and the optimiser
updates one array per weight instead of one per block and weight, so compile time no longer
grows with depth. Every block has the same graph there: the residual stream starts at zero
(block 0's drop path has rate 0, so zero + hidden is hidden exactly), drop-path rates are a
scanned input and, under drop path, every block has an RNG stream. `vmp_jax.models.layers`
converts between the two layouts: exports and {path: array} dicts use the per-block one, and a
checkpoint of either layout loads into the other (`vmp_jax.engine.relayout` for a whole state).
"""

import dataclasses

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
        if cfg.scan_layers:
            self.layers = _stacked_blocks(cfg, rngs)
        else:
            self.layers = nnx.List([Block(cfg, rates[i] > 0, rngs=rngs) for i in range(cfg.depth)])
        self.drop_path = DropPath(rates[-1] > 0, rngs=rngs)
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
        """(hidden, residual) after the first `upto` blocks (all by default); residual is None
        when no block ran."""
        count = self.cfg.depth if upto is None else upto
        rates = drop_path_rates(self.cfg)[:count]
        hidden, residual = self.embed(video), None
        if count == 0:
            return hidden, residual
        if self.cfg.scan_layers:
            return self._scan_blocks(hidden, rates)
        for block, rate in zip(self.layers[:count], rates, strict=True):
            if self.cfg.remat:
                run = nnx.remat(lambda b, h, r, rate=rate: b(h, r, rate))
                hidden, residual = run(block, hidden, residual)
            else:
                hidden, residual = block(hidden, residual, rate)
        return hidden, residual

    def _scan_blocks(self, hidden, rates):
        """The first len(rates) stacked blocks as one scan from a zero residual stream."""
        residual = jnp.zeros(hidden.shape, jnp.float32)  # (b, l, C)
        count = len(rates)
        blocks = self.layers if count == self.cfg.depth else self._stacked(slice(0, count))

        def step(carry, block, rate):
            return block(*carry, rate)

        if self.cfg.remat:
            step = nnx.remat(step)
        scan = nnx.scan(step, in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry)
        return scan((hidden, residual), blocks, jnp.asarray(rates, jnp.float32))

    def block(self, i: int) -> Block:
        """Block i, in either layout (stacked: a copy sliced out of the stack)."""
        return self._stacked(i) if self.cfg.scan_layers else self.layers[i]

    def _stacked(self, index):
        """The stacked blocks at `index` (an int or a slice of the layers axis), as a copy:
        RNG counts it advances are not written back."""
        graph, state = nnx.split(self.layers)
        return nnx.merge(graph, jax.tree.map(lambda x: x[index], state))

    def tokens(self, video):
        """The final tokens, (b, 1 + T*P, C) float32: norm_f(residual + drop_path(hidden))
        after every block, CLS first (what the classifier and the detection head read)."""
        hidden, residual = self.features(video)
        rate = drop_path_rates(self.cfg)[-1]
        residual = residual + self.drop_path(hidden, rate).astype(jnp.float32)
        return self.norm_f(residual)

    def __call__(self, video):
        cls = self.tokens(video)[:, 0]  # (b, C) float32
        return self.head(self.head_drop(cls)).astype(jnp.float32)


def _stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
    """`depth` blocks with their weights (and RNG streams) stacked on a leading "layers" axis."""

    @nnx.split_rngs(splits=cfg.depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def build(rngs):
        return Block(cfg, cfg.drop_path_rate > 0, rngs=rngs)

    return build(rngs)


def count_params(model: nnx.Module) -> int:
    """The exact number of parameter scalars."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract_params(cfg: ModelConfig) -> dict[tuple, nnx.Variable]:
    """{path: abstract Param} of the model `cfg` describes (shapes only, nothing allocated),
    in the per-block layout whatever cfg.scan_layers: paths as nnx.to_flat_state gives them,
    e.g. ("layers", 0, "mixer", "fwd", "A_log")."""
    per_block = dataclasses.replace(cfg, scan_layers=False)  # (the detector's are the same)
    abstract = nnx.eval_shape(lambda: VideoMamba(per_block, rngs=nnx.Rngs(0)))
    return dict(nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
