"""The model built around given weights equals the one initialised and then overwritten."""

import jax
import numpy as np
import pytest
from flax import nnx

from tests.tiny_run import as_numpy
from vmp_jax.engine.state import flat_params, model_with_params, set_params
from vmp_jax.models import ModelConfig, VideoMamba

TINY = dict(depth=2, num_frames=2, img_size=32, num_classes=5, embed_dim=32, d_state=4)


def _leaves(model: VideoMamba) -> dict:
    """{path: numpy array} of every variable (weights and RNG keys and counts)."""
    return {path: as_numpy(v[...]) for path, v in nnx.to_flat_state(nnx.state(model))}


@pytest.mark.parametrize("scan_layers", [False, True], ids=["looped", "scanned"])
def test_model_with_params_equals_an_initialised_model_overwritten(scan_layers, seed):
    cfg = ModelConfig(**TINY, drop_path_rate=0.2, scan_layers=scan_layers)  # per-block streams
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in flat_params(VideoMamba(cfg, rngs=nnx.Rngs(1))).items()}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    want = VideoMamba(cfg, rngs=nnx.Rngs(3))
    set_params(want, params)
    got = model_with_params(cfg, params, seed=3)
    got_leaves, want_leaves = _leaves(got), _leaves(want)
    assert got_leaves.keys() == want_leaves.keys()
    assert any(path[-1] == "key" for path in got_leaves)  # the RNG streams are compared too
    for path, value in want_leaves.items():
        np.testing.assert_array_equal(got_leaves[path], value, err_msg=str(path))
    video = jax.random.normal(jax.random.key(seed), (1, 2, 32, 32, 3))
    got.eval(), want.eval()
    np.testing.assert_array_equal(got(video), want(video))
