"""`vmp similarity`: the layer's M matrices reproduce its scans, have the structure SPEC
sections 1-2 give them, and the command writes the arrays and heatmaps."""

import numpy as np
import pytest

from vmp_jax import cli
from vmp_jax.experiment import REPO_ROOT
from vmp_jax.models import similarity
from vmp_jax.models.config import preset
from vmp_jax.models.videomamba import VideoMamba
from vmp_jax.ssm import selective_scan

DEMO = str(REPO_ROOT / "configs" / "demo.py")


@pytest.fixture(scope="module")
def tiny():
    from flax import nnx

    cfg = preset(
        "ti", pro=True, embed_dim=32, depth=3, d_state=4, num_frames=2, img_size=32, num_classes=3
    )
    model = VideoMamba(cfg, rngs=nnx.Rngs(1))
    video = np.random.default_rng(2).standard_normal((1, 2, 32, 32, 3)).astype(np.float32)
    return model, video


def test_matrices_reproduce_the_layers_scans(tiny):
    """For a one-channel group, M u + D u is that channel of the layer's own scan (no gate)."""
    model, video = tiny
    layer, c = 1, 5
    fwd, bwd, _ = similarity.mixer_inputs(model, video, layer)
    result = similarity.layer_matrices(model, video, layer, (c, c + 1))
    options = dict(residual=model.cfg.residual_ssm, algorithm="sequential")
    y_f = np.asarray(selective_scan(*fwd, **options))[0, :, c]  # (L,)
    y_b = np.asarray(selective_scan(*bwd, reverse=True, mask_diagonal=True, **options))[0, :, c]
    u_f, u_b = np.asarray(fwd.u)[0, :, c], np.asarray(bwd.u)[0, :, c]
    m = result.matrices
    np.testing.assert_allclose(m["M_f"] @ u_f + fwd.D[c] * u_f, y_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m["M_b_masked"] @ u_b + bwd.D[c] * u_b, y_b, rtol=1e-4, atol=1e-5)


def test_matrix_structure(tiny):
    model, video = tiny
    m = similarity.layer_matrices(model, video, 2, (0, 8)).matrices
    size = 1 + 2 * 4  # cls + T x (32/16)^2 patches
    assert all(x.shape == (size, size) for x in m.values())
    np.testing.assert_array_equal(np.triu(m["M_f"], 1), 0)  # causal
    np.testing.assert_array_equal(np.tril(m["M_b"], -1), 0)  # anti-causal
    assert np.all(np.diag(m["M_b"]) != 0)
    np.testing.assert_array_equal(m["M_b_masked"], m["M_b"] - np.diag(np.diag(m["M_b"])))
    np.testing.assert_allclose(m["M_sum"], m["M_f"] + m["M_b_masked"])


def test_bad_layer_and_channels_are_named(tiny):
    model, video = tiny
    with pytest.raises(ValueError, match="--layer must be in 0..2"):
        similarity.layer_matrices(model, video, 3, (0, 8))
    with pytest.raises(ValueError, match="--channels must satisfy"):
        similarity.layer_matrices(model, video, 0, (8, 8))


def test_command_writes_arrays_and_heatmaps(tmp_path, capsys):
    out = str(tmp_path / "sim")
    argv = ["similarity", "--config", DEMO, "--random", "--layer", "1", "--out", out]
    assert cli.main([*argv, "--channels", "0:4", "--config.model.depth=2"]) == 0
    with np.load(f"{out}.npz") as saved:
        assert set(saved.files) == {"layer", "channels", *similarity.NAMES}
        assert saved["M_f"].shape == (33, 33) and int(saved["layer"]) == 1  # 1 + 8 x 2 x 2
    for name in (*similarity.NAMES, None):
        png = f"{out}_{name}.png" if name else f"{out}.png"
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert cli.main([*argv[:-2], "--layer", "9", "--out", out]) == 2
    assert "--layer must be in 0..3" in capsys.readouterr().err


def test_command_loads_a_training_checkpoint(tmp_path):
    """--checkpoint: the matrices are those of the checkpoint's weights, not of the init."""
    import jax
    from flax import nnx

    from vmp_jax.engine import optim, sharding
    from vmp_jax.engine.checkpoint import Checkpoints
    from vmp_jax.engine.state import Trainer
    from vmp_jax.experiment import load_config, model_config

    overrides = ["model.depth=2"]
    config = load_config(DEMO, overrides)
    mesh = sharding.make_mesh(config.mesh)
    trainer = Trainer(model_config(config), optim.make_optimizer(config, 1), mesh)
    parts = trainer.parts(trainer.init())  # eval mode
    params = nnx.state(parts.model, nnx.Param)
    nnx.update(parts.model, jax.tree.map(lambda x: x * 1.5, params))  # not the init any more
    checkpoints = Checkpoints(str(tmp_path / "run"), async_save=False)
    checkpoints.save(7, nnx.state(parts))
    checkpoints.close()
    out = str(tmp_path / "sim")
    argv = ["similarity", "--config", DEMO, "--random", "--layer", "1", "--out", out]
    argv += [f"--config.{o}" for o in overrides]
    assert cli.main([*argv, "--checkpoint", str(tmp_path / "run")]) == 0
    video = jax.random.normal(jax.random.key(0), (1, 8, 32, 32, 3))
    expected = similarity.layer_matrices(parts.model, video, 1, (0, 8)).matrices
    with np.load(f"{out}.npz") as got:
        np.testing.assert_allclose(got["M_f"], expected["M_f"], rtol=1e-4, atol=1e-6)
