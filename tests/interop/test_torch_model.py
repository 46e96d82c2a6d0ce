"""The pure-PyTorch model against the JAX model: the scan against the reference algorithm for
every option, logits at parity for every VideoMambaPro switch combination (a tiny config) and
for VideoMamba-Ti / VideoMambaPro-Ti at 8x224, and its loader's errors."""

import dataclasses
import itertools
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from vmp_jax.engine.state import flat_params, set_params
from vmp_jax.interop import state_dict
from vmp_jax.interop.torch_model import VideoMambaPro, selective_scan
from vmp_jax.models.config import ModelConfig, preset
from vmp_jax.models.videomamba import VideoMamba
from vmp_jax.ssm import selective_scan as jax_scan

SWITCHES = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("mask,residual", list(itertools.product([False, True], repeat=2)))
def test_scan_matches_reference(mask, residual, seed):
    rng = np.random.default_rng(seed)
    b, l, d, n = 2, 9, 5, 3
    u, z = rng.standard_normal((2, b, l, d)).astype(np.float32)
    delta = rng.uniform(0.01, 0.5, (b, l, d)).astype(np.float32)
    A = -rng.uniform(0.5, 2.0, (d, n)).astype(np.float32)
    B, C = rng.standard_normal((2, b, l, n)).astype(np.float32)
    D = rng.standard_normal(d).astype(np.float32)
    args = (u, delta, A, B, C, D, z)
    ours = jax_scan(
        *map(jnp.asarray, args), mask_diagonal=mask, residual=residual, algorithm="reference"
    )
    theirs = selective_scan(*map(torch.from_numpy, args), mask_diagonal=mask, residual=residual)
    np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), rtol=1e-5, atol=1e-5)


def _perturbed_model(cfg: ModelConfig, seed: int, scale: float = 0.05) -> VideoMamba:
    """The initialisation from `seed` plus normal noise of std `scale` on every parameter (so
    that zero-initialised ones matter too)."""
    model = VideoMamba(cfg, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    params = {
        k: np.asarray(v) + scale * rng.standard_normal(v.shape).astype(np.float32)
        for k, v in flat_params(model).items()
    }
    set_params(model, params)
    model.eval()
    return model


def _twin(model: VideoMamba, tmp_path) -> VideoMambaPro:
    params = {k: np.asarray(v) for k, v in flat_params(model).items()}
    tensors = state_dict.to_state_dict(params, model.cfg)
    path = state_dict.write(tensors, str(tmp_path / "model.safetensors"), model.cfg)[0]
    return VideoMambaPro.from_exported(path)


def _logits(model, twin, video: np.ndarray):
    ours = np.asarray(model(jnp.asarray(video)))
    with torch.no_grad():
        theirs = twin(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).numpy()
    return ours, theirs


def _assert_parity(ours, theirs):
    scale = np.abs(ours).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale, (ours, theirs)
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.parametrize("mask,residual,shares", SWITCHES)
def test_tiny_logit_parity(mask, residual, shares, tmp_path, seed):
    cfg = ModelConfig(
        embed_dim=32, depth=3, d_state=4, num_frames=3, img_size=32, num_classes=6,
        bwd_mask_diagonal=mask, residual_ssm=residual, bwd_shares_delta=shares,
    )  # fmt: skip
    model = _perturbed_model(cfg, seed)
    video = np.random.default_rng(seed).standard_normal((4, 3, 32, 32, 3)).astype(np.float32)
    _assert_parity(*_logits(model, _twin(model, tmp_path), video))


@pytest.mark.parametrize("pro", [False, True], ids=["videomamba_ti", "vmp_ti"])
def test_ti_8x224_logit_parity(pro, tmp_path, seed):
    """Noise on every weight (a random seed), as in the tiny test; besides the logits, every
    token after the final norm is compared: all 24 blocks on all 1569 tokens."""
    # VMP-Ti with its blocks stacked (model.scan_layers): both layouts meet PyTorch's names.
    model = _perturbed_model(preset("ti", pro=pro, num_classes=400, scan_layers=pro), seed)
    twin = _twin(model, tmp_path)
    video = np.random.default_rng(seed).standard_normal((1, 8, 224, 224, 3)).astype(np.float32)
    hidden, residual = model.features(jnp.asarray(video))
    ours = np.asarray(model.norm_f(residual + hidden))  # (1, 1569, 192)
    with torch.no_grad():  # one pass: forward is classify(tokens(video))
        tokens = twin.tokens(torch.from_numpy(video).permute(0, 4, 1, 2, 3))
        their_logits = twin.classify(tokens).numpy()
    _assert_parity(np.asarray(model(jnp.asarray(video))), their_logits)
    theirs = tokens.numpy()
    assert ours.shape == theirs.shape == (1, 1569, 192)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()


def test_from_exported_names_the_first_bad_tensor(tmp_path):
    cfg = ModelConfig(embed_dim=32, depth=2, d_state=4, num_frames=2, img_size=32, num_classes=3)
    model = _perturbed_model(cfg, 0)
    params = {k: np.asarray(v) for k, v in flat_params(model).items()}
    tensors = state_dict.to_state_dict(params, cfg)
    tensors["layers.1.mixer.x_proj.weight"] = tensors["layers.1.mixer.x_proj.weight"][:5]
    path = state_dict.write(tensors, str(tmp_path / "bad.safetensors"), cfg)[0]
    with pytest.raises(
        ValueError,
        match=r"layers\.1\.mixer\.x_proj\.weight: expected shape \(10, 64\), found \(5, 64\)",
    ):
        VideoMambaPro.from_exported(path)
    os.remove(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="bad.json not found"):
        VideoMambaPro.from_exported(path)


def test_wrong_video_shape_is_named():
    twin = VideoMambaPro(
        **dataclasses.asdict(ModelConfig(embed_dim=32, depth=1, num_frames=2, img_size=32))
    )
    with pytest.raises(
        ValueError, match=r"video has shape \(1, 3, 4, 32, 32\); expected \(batch, 3, 2, 32, 32\)"
    ):
        twin(torch.zeros(1, 3, 4, 32, 32))
