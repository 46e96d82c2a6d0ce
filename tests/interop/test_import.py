"""`vmp export` / `vmp import` end to end: the round trip is bit-identical, released-style
checkpoints (nested, prefixed, other resolution, frame count and class count, image weights,
VideoMamba into VideoMambaPro) are adapted as VideoMamba's fine-tuning code does, fine-tuning
starts from the imported weights, and bad files are refused naming the first bad tensor."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vmp_jax import cli
from vmp_jax.engine.checkpoint import restore_params
from vmp_jax.experiment import REPO_ROOT, load_config, model_config
from vmp_jax.interop import convert, state_dict
from vmp_jax.models.videomamba import abstract_params

DEMO = str(REPO_ROOT / "configs" / "demo.py")


def _overrides(**changes) -> list[str]:
    """A tiny VideoMamba on the demo config; `changes` (model keys) on top."""
    model = dict(depth=2, embed_dim=32, d_state=4, dt_rank=2, num_frames=4, img_size=32)
    model |= dict(bwd_mask_diagonal=False, residual_ssm=False, bwd_shares_delta=False)
    model |= changes
    out = [f"--config.model.{k}={v}" for k, v in model.items()]
    return out + [
        f"--config.data.num_frames={model['num_frames']}",
        f"--config.data.img_size={model['img_size']}",
        f"--config.data.short_side={model['img_size']}",
    ]


def _config(**changes):
    return load_config(DEMO, _overrides(**changes))


def _random_tensors(config, seed: int) -> dict[str, np.ndarray]:
    """A state dict for `config`'s model with every tensor random."""
    rng = np.random.default_rng(seed)
    tensors = state_dict.to_state_dict(
        convert.model_params(config, seed=seed), model_config(config)
    )
    return {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in tensors.items()}


def _imported(workdir: str, config) -> dict[str, np.ndarray]:
    """The state dict of the model in an imported checkpoint."""
    cfg = model_config(config)
    params, step = restore_params(workdir, abstract_params(cfg))
    assert step == 0
    return state_dict.to_state_dict(params, cfg)


def _save_pth(tensors: dict, path: str, *, nest: str | None = None, prefix: str = "") -> str:
    sd = {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    torch.save({nest: sd, "epoch": 3} if nest else sd, path)
    return path


@pytest.mark.parametrize(
    ("pro", "scan_layers"), [(False, False), (True, True)], ids=["vm-looped", "vmp-scanned"]
)
def test_round_trip_is_bit_identical(pro, scan_layers, tmp_path, seed):
    """JAX checkpoint -> export -> import -> JAX: every parameter bit for bit. With
    scan_layers the first checkpoint holds stacked blocks, the export still names them per
    layer (layers.<i>....) and the second import is into the per-block layout."""
    switches = dict(bwd_mask_diagonal=pro, residual_ssm=pro, bwd_shares_delta=pro, num_classes=4)
    flags = _overrides(**switches, scan_layers=scan_layers)
    looped = _overrides(**switches, scan_layers=False)
    config = load_config(DEMO, flags)
    first = str(tmp_path / "first")
    source = _save_pth(_random_tensors(config, seed), str(tmp_path / "source.pth"))
    assert cli.main(["import", "--config", DEMO, *flags, "--weights", source, "--out", first]) == 0
    for suffix in (".safetensors", ".pth"):
        out = str(tmp_path / f"exported{suffix}")
        argv = ["export", "--config", DEMO, *flags, "--checkpoint", first, "--out", out]
        assert cli.main(argv) == 0
        second = str(tmp_path / f"second{suffix}")
        assert (
            cli.main(["import", "--config", DEMO, *looped, "--weights", out, "--out", second]) == 0
        )
        a, b = _imported(first, config), _imported(second, config)
        assert a.keys() == b.keys() and "layers.1.mixer.in_proj.weight" in a
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
            assert a[name].tobytes() == b[name].tobytes()
    saved = json.loads((tmp_path / "exported.json").read_text())
    assert saved["residual_ssm"] is pro and saved["depth"] == 2


def test_released_video_checkpoint_is_adapted(tmp_path):
    """A K400-style file at 64 px, 2 frames, 10 classes, nested under `model` with a
    `backbone.` prefix, into 32 px, 4 frames, 4 classes."""
    released = _config(img_size=64, num_frames=2, num_classes=10)
    tensors = _random_tensors(released, 1)
    path = _save_pth(tensors, str(tmp_path / "k400.pth"), nest="model", prefix="backbone.")
    target = _config(num_classes=4)
    report = convert.import_weights(target, path, str(tmp_path / "out"), seed=7)
    got = _imported(str(tmp_path / "out"), target)
    # Spatial grid 4x4 -> 2x2, bicubic as VideoMamba's fine-tuning code; CLS row kept.
    grid = torch.from_numpy(tensors["pos_embed"][:, 1:]).reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False)
    expected = np.concatenate(
        [tensors["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2).numpy()], 1
    )
    np.testing.assert_allclose(got["pos_embed"], expected, rtol=1e-6)
    temporal = torch.from_numpy(tensors["temporal_pos_embedding"]).permute(0, 2, 1)
    temporal = F.interpolate(temporal, size=(4,), mode="linear", align_corners=False)
    np.testing.assert_allclose(
        got["temporal_pos_embedding"], temporal.permute(0, 2, 1).numpy(), rtol=1e-6
    )
    # The head is the target's initialisation from the seed; everything else is loaded as is.
    init = state_dict.to_state_dict(convert.model_params(target, seed=7), model_config(target))
    for name in ("head.weight", "head.bias"):
        np.testing.assert_array_equal(got[name], init[name])
    resized = {"pos_embed", "temporal_pos_embedding", "head.weight", "head.bias"}
    for name in set(got) - resized:
        np.testing.assert_array_equal(got[name], tensors[name], err_msg=name)
    text = "\n".join(report.lines())
    assert "pos_embed: bicubic 4x4 -> 2x2" in text
    assert "temporal_pos_embedding: linear 2 -> 4 frames" in text
    assert "initialised head.weight: 10 classes in the file, 4 here" in text
    assert f"loaded {len(got) - len(resized)} tensors unchanged" in text


def test_head_slice(tmp_path):
    tensors = _random_tensors(_config(num_classes=10), 2)
    path = _save_pth(tensors, str(tmp_path / "ten.pth"))
    target = _config(num_classes=4)
    convert.import_weights(target, path, str(tmp_path / "out"), head="slice")
    got = _imported(str(tmp_path / "out"), target)
    np.testing.assert_array_equal(got["head.weight"], tensors["head.weight"][:4])
    four = _save_pth(got, str(tmp_path / "four.pth"))
    with pytest.raises(
        state_dict.StateDictError, match="head.weight has 4 classes; cannot slice 10"
    ):
        convert.import_weights(_config(num_classes=10), four, str(tmp_path / "o2"), head="slice")


def test_image_checkpoint_is_inflated(tmp_path):
    """An ImageNet-style dict: Conv2d patch kernel, no temporal embedding."""
    tensors = _random_tensors(_config(), 3)
    image = dict(tensors)
    image["patch_embed.proj.weight"] = tensors["patch_embed.proj.weight"][:, :, 0]
    del image["temporal_pos_embedding"]
    path = _save_pth(image, str(tmp_path / "in1k.pth"), nest="model")
    report = convert.import_weights(_config(), path, str(tmp_path / "out"))
    got = _imported(str(tmp_path / "out"), _config())
    np.testing.assert_array_equal(
        got["patch_embed.proj.weight"], tensors["patch_embed.proj.weight"]
    )
    np.testing.assert_array_equal(got["temporal_pos_embedding"], 0.0)
    text = "\n".join(report.lines())
    assert "image kernel inflated" in text and "not in the checkpoint (image model)" in text


def test_videomamba_into_videomambapro_drops_the_backward_delta(tmp_path):
    vm = _random_tensors(_config(), 4)
    path = _save_pth(vm, str(tmp_path / "vm.pth"))
    pro = _config(bwd_mask_diagonal=True, residual_ssm=True, bwd_shares_delta=True)
    report = convert.import_weights(pro, path, str(tmp_path / "out"))
    got = _imported(str(tmp_path / "out"), pro)
    for i in range(2):
        name = f"layers.{i}.mixer.x_proj_b.weight"
        np.testing.assert_array_equal(got[name], vm[name][2:])  # dt_rank 2 rows dropped
        assert f"layers.{i}.mixer.dt_proj_b.weight" not in got
    text = "\n".join(report.lines())
    assert (
        "dropped layers.*.mixer.dt_proj_b.weight: VMP shares the forward delta (in 2 layers)"
        in text
    )
    assert "dropped layers.*.mixer.x_proj_b.weight rows 0..1: its dt rows (in 2 layers)" in text
    assert f"loaded {len(got) - 2} tensors unchanged" in text  # all but the cut x_proj_b


def test_bad_files_are_refused_naming_the_problem(tmp_path):
    config = _config()
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        convert.import_weights(config, str(tmp_path / "absent.pth"), out)
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    with pytest.raises(state_dict.StateDictError, match="not a state dict \\(a list\\)"):
        convert.import_weights(config, str(tmp_path / "list.pth"), out)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(state_dict.StateDictError, match="not a readable PyTorch file"):
        convert.import_weights(config, str(tmp_path / "junk.pth"), out)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(state_dict.StateDictError, match="not a readable safetensors file"):
        convert.import_weights(config, str(tmp_path / "junk.safetensors"), out)
    wider = _save_pth(_random_tensors(_config(embed_dim=48), 5), str(tmp_path / "wide.pth"))
    with pytest.raises(
        state_dict.StateDictError,
        match=r"tensor cls_token has shape \(1, 1, 48\), expected \(1, 1, 32\)",
    ):
        convert.import_weights(config, wider, out)
    deeper = _save_pth(_random_tensors(_config(depth=3), 6), str(tmp_path / "deep.pth"))
    with pytest.raises(state_dict.StateDictError, match=r"unexpected tensor layers\.2\."):
        convert.import_weights(config, deeper, out)
    assert not os.path.exists(os.path.join(out, "checkpoints"))  # nothing written
    # The CLI: exit code 2 and the message.
    assert (
        cli.main(["import", "--config", DEMO, *_overrides(), "--weights", wider, "--out", out]) == 2
    )


def test_import_refuses_a_workdir_with_checkpoints(tmp_path):
    path = _save_pth(_random_tensors(_config(), 8), str(tmp_path / "w.pth"))
    convert.import_weights(_config(), path, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="already has checkpoints"):
        convert.import_weights(_config(), path, str(tmp_path / "out"))


def test_fine_tuning_starts_from_imported_weights(tmp_path):
    """train.init_from: the first state of a new run holds the imported weights."""
    from vmp_jax.engine.state import Trainer, flat_params
    from vmp_jax.train import loop

    config = _config()
    tensors = _random_tensors(config, 9)
    convert.import_weights(
        config, _save_pth(tensors, str(tmp_path / "w.pth")), str(tmp_path / "imp")
    )
    trainer = Trainer.from_config(config)
    state = loop._init_from(trainer, trainer.init(), str(tmp_path / "imp"), echo=lambda _: None)
    params = {k: np.asarray(v) for k, v in flat_params(trainer.model(state)).items()}
    got = state_dict.to_state_dict(params, model_config(config))
    for name, value in tensors.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
