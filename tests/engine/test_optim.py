"""The optimiser recipe: lr scaling, warm-up and cosine schedule, the weight-decay mask."""

import jax
import numpy as np
import pytest
from flax import nnx

from vmp_jax.engine import optim
from vmp_jax.experiment import REPO_ROOT, load_config, model_config
from vmp_jax.models.videomamba import VideoMamba


def _config(*overrides):
    return load_config(REPO_ROOT / "configs" / "k400_vmp_ti_f8.py", list(overrides))


def test_peak_lr_scales_with_batch():
    config = _config("data.batch_size=512")
    assert optim.peak_lr(config) == pytest.approx(1.5e-4 * 2)


def test_schedule_warms_up_then_decays_to_min_lr():
    config = _config("optim.epochs=10", "optim.warmup_epochs=2")
    schedule = optim.schedule(config, steps_per_epoch=100)
    peak = optim.peak_lr(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(100)) == pytest.approx(peak / 2, rel=1e-5)
    assert float(schedule(200)) == pytest.approx(peak, rel=1e-5)
    values = [float(schedule(s)) for s in range(200, 1001, 50)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert float(schedule(1000)) == pytest.approx(config.optim.min_lr, rel=1e-4)


def test_no_weight_decay_on_norms_biases_embeddings_a_log_and_d():
    cfg = model_config(_config("model.depth=1"))
    params = nnx.state(VideoMamba(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    leaves = jax.tree_util.tree_leaves_with_path(optim.decay_mask(params))
    name = lambda path: ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)  # noqa: E731
    flat = {name(path).removesuffix(".value"): bool(leaf) for path, leaf in leaves}
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed and all(k.endswith("kernel") or k.endswith("conv_kernel") for k in decayed)
    for name in ("pos_embed", "temporal_pos_embedding", "cls_token", "A_log", ".D", "bias", "norm"):
        assert not any(name in k for k in decayed), name
    assert np.sum(list(flat.values())) < len(flat)
