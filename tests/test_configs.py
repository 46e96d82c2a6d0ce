"""Every experiment file in configs/ loads, builds its abstract model and data settings, has
SPEC's parameter count, and cannot disagree with itself across sections."""

from dataclasses import replace
from pathlib import Path

import pytest
from flax import nnx

from vmp_jax import cli
from vmp_jax.data.pipeline import ClipSettings
from vmp_jax.experiment import load_config, model_config
from vmp_jax.models.videomamba import VideoMamba, abstract_params, count_params

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENTS = sorted(p for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))

# SPEC section 5: exact parameter counts at 400 classes, 8 frames, 224 px, by (width, pro).
SPEC_PARAMS = {
    (192, False): 7.03e6,
    (384, False): 25.57e6,
    (576, False): 73.88e6,
    (192, True): 6.80e6,
    (384, True): 24.67e6,
    (576, True): 71.18e6,
}
SPEC_DEPTH = {192: 24, 384: 24, 576: 32}


def _count(cfg) -> int:
    """Parameters of the config's abstract model, built with its blocks stacked (one block
    traced: 0.1 s for VMP-M instead of 4 s per block); the per-block layout has the same."""
    model = nnx.eval_shape(lambda: VideoMamba(replace(cfg, scan_layers=True), rngs=nnx.Rngs(0)))
    return count_params(model)


def test_every_experiment_file_is_covered():
    assert len(EXPERIMENTS) >= 40, [p.name for p in EXPERIMENTS]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_loads_and_builds(path):
    config = load_config(path)
    cfg = model_config(config)
    clips = ClipSettings.from_config(config)
    assert (clips.num_frames, clips.img_size) == (cfg.num_frames, cfg.img_size)
    assert config.data.short_side == config.data.img_size
    count = _count(cfg)
    if cfg == model_config(load_config(EXPERIMENTS[0])):  # one per-block build, the same count
        assert count == sum(v.size for v in abstract_params(cfg).values())
    spec = SPEC_PARAMS.get((cfg.embed_dim, cfg.bwd_shares_delta))
    if spec is None or SPEC_DEPTH[cfg.embed_dim] != cfg.depth or cfg.img_size != 224:
        assert count > 0
        return
    # SPEC's count is at 400 classes and 8 frames: the head and the temporal embedding adjust it.
    C = cfg.embed_dim
    at_spec_shape = count - (cfg.num_classes - 400) * (C + 1) - (cfg.num_frames - 8) * C
    assert abs(at_spec_shape - spec) <= 0.005e6, (path.stem, count, at_spec_shape, spec)


def test_a_frame_count_the_model_does_not_have_is_an_error_naming_both_keys(capsys):
    argv = ["train", "--config", "configs/k400_vmp_ti_f8.py", "--workdir", "/nonexistent/x"]
    assert cli.main([*argv, "--config.data.num_frames=16"]) == 2
    err = capsys.readouterr().err
    assert "data.num_frames is 16 but model.num_frames is 8" in err
    assert "allow_resize" in err
    with pytest.raises(ValueError, match="data.img_size is 160 but model.img_size is 224"):
        load_config("configs/k400_vmp_ti_f8.py", ["data.img_size=160"])


def test_linked_keys_follow_their_source_and_resize_is_explicit():
    config = load_config("configs/k400_vmp_ti_f8.py", ["model.num_frames=16", "model.img_size=160"])
    assert (config.data.num_frames, config.data.img_size, config.data.short_side) == (16, 160, 160)
    resized = load_config(
        "configs/k400_vmp_ti_f8.py", ["data.num_frames=16", "data.allow_resize=True"]
    )
    assert (resized.model.num_frames, resized.data.num_frames) == (8, 16)
    own_short_side = load_config("configs/k400_vmp_ti_f8.py", ["data.short_side=256"])
    assert own_short_side.data.short_side == 256
