"""The exported state dict against SPEC section 7: VideoMamba-Ti's 416 tensors, names and
shapes, written out here from the spec (not from the table under test)."""

import os

import numpy as np
import pytest
from safetensors import safe_open

from vmp_jax import cli
from vmp_jax.experiment import REPO_ROOT
from vmp_jax.interop import names
from vmp_jax.models.config import preset


def _spec_ti(pro: bool) -> dict[str, tuple]:
    """VideoMamba-Ti, 8 frames, 224 px, 400 classes (VideoMambaPro: no dt_proj_b, x_proj_b
    with 2N rows)."""
    shapes = {
        "cls_token": (1, 1, 192),
        "pos_embed": (1, 197, 192),
        "temporal_pos_embedding": (1, 8, 192),
        "patch_embed.proj.weight": (192, 3, 1, 16, 16),
        "patch_embed.proj.bias": (192,),
        "norm_f.weight": (192,),
        "head.weight": (400, 192),
        "head.bias": (400,),
    }
    for i in range(24):
        m = f"layers.{i}.mixer."
        shapes[f"layers.{i}.norm.weight"] = (192,)
        shapes[m + "in_proj.weight"] = (768, 192)
        shapes[m + "out_proj.weight"] = (192, 384)
        for s, a in (("", "A_log"), ("_b", "A_b_log")):
            shapes[m + f"conv1d{s}.weight"] = (384, 1, 4)
            shapes[m + f"conv1d{s}.bias"] = (384,)
            shapes[m + f"x_proj{s}.weight"] = (32 if pro and s else 44, 384)
            shapes[m + a] = (384, 16)
            shapes[m + f"D{s}"] = (384,)
            if not (pro and s):
                shapes[m + f"dt_proj{s}.weight"] = (384, 12)
                shapes[m + f"dt_proj{s}.bias"] = (384,)
    return shapes


@pytest.mark.parametrize("pro", [False, True])
def test_table_matches_spec(pro):
    expected = _spec_ti(pro)
    assert len(expected) == (368 if pro else 416)
    assert names.torch_shapes(preset("ti", pro=pro)) == expected


def test_table_covers_every_parameter_once():
    from vmp_jax.models.videomamba import abstract_params

    cfg = preset("ti", pro=True, depth=3)
    paths = [e.jax_path for e in names.table(cfg)]
    assert sorted(map(str, paths)) == sorted(map(str, abstract_params(cfg)))
    assert len({e.torch_name for e in names.table(cfg)}) == len(paths)


@pytest.mark.parametrize("layout", [names.LINEAR, names.CONV1D, names.PATCH, names.TOKEN])
def test_layouts_invert(layout, seed):
    shape = {"linear": (5, 7), "conv1d": (4, 6), "patch": (2, 3, 3, 5), "token": (5,)}
    x = np.random.default_rng(seed).standard_normal(shape[layout.name]).astype(np.float32)
    np.testing.assert_array_equal(layout.from_torch(layout.to_torch(x)), x)


def test_exported_videomamba_ti_file(tmp_path):
    """`vmp export` of a fresh VideoMamba-Ti: the file holds exactly SPEC's 416 tensors."""
    out = str(tmp_path / "vm_ti.safetensors")
    config = str(REPO_ROOT / "configs" / "k400_vm_ti_f8.py")
    assert cli.main(["export", "--config", config, "--out", out]) == 0
    with safe_open(out, "np") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not iterable)
    assert found == _spec_ti(pro=False)
    assert os.path.isfile(str(tmp_path / "vm_ti.json"))
