"""Layer-wise learning-rate decay (optim.layer_decay): each block's update scaled by
d^(depth - i), the embedding's by d^(depth + 1), norm_f and the head's by 1, in both block
layouts; off (1.0), the optimiser and its state are as before."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from vmp_jax.engine import optim
from vmp_jax.experiment import REPO_ROOT, load_config, model_config
from vmp_jax.models.videomamba import VideoMamba


def _config(*overrides):
    return load_config(REPO_ROOT / "configs" / "k400_vmp_ti_f8.py", ["model.depth=3", *overrides])


def _names(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_updates_scale_with_depth(scan_layers):
    cfg = dataclasses.replace(model_config(_config()), scan_layers=scan_layers)
    params = nnx.state(VideoMamba(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    tx = optax.chain(optax.sgd(1.0), optim.layer_scales(0.5, 3))
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    found = {_names(p).removesuffix(".value"): np.asarray(u) for p, u in
             jax.tree_util.tree_leaves_with_path(updates)}  # fmt: skip
    assert np.all(found["embed.pos_embed"] == -(0.5**4))
    assert np.all(found["embed.patch_embed.kernel"] == -(0.5**4))
    assert np.all(found["norm_f.weight"] == -1) and np.all(found["head.kernel"] == -1)
    for i in range(3):
        stacked = found.get("layers.norm.weight")
        block = stacked[i] if scan_layers else found[f"layers.{i}.norm.weight"]
        assert np.all(block == -(0.5 ** (3 - i))), (i, block[:2])


def test_layer_decay_is_in_the_optimiser_only_below_one():
    config = _config()
    cfg = model_config(config)
    params = nnx.state(VideoMamba(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    plain = optim.make_optimizer(config, 10).init(params)
    decayed = optim.make_optimizer(_config("optim.layer_decay=0.75"), 10).init(params)
    assert jax.tree.structure(plain) != jax.tree.structure(decayed)
    assert len(jax.tree.leaves(plain)) == len(jax.tree.leaves(decayed))
    with pytest.raises(ValueError, match="layer_decay"):
        optim.make_optimizer(_config("optim.layer_decay=1.5"), 10)
