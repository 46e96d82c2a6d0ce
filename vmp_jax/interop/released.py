"""Released VideoMamba checkpoints into our model (`vmp import`).

OpenGVLab's files are flat video state dicts (`videomamba_t16_k400_f8_res224.pth`) or ImageNet
ones nested under `model` (`videomamba_t16_in1k_res224.pth`); fine-tuning code often adds a
`backbone.` / `encoder.` prefix. `adapt` turns such a dict into exactly the tensors of a config's
model, as VideoMamba's own fine-tuning code does, and reports every change:

- image weights (Conv2d patch kernel, no temporal embedding) inflated to video: the kernel gains
  its one-frame time axis, the temporal embedding starts at zero;
- the spatial position grid resized bicubically, the temporal embedding linearly, to the
  config's resolution and frame count (torch.nn.functional.interpolate, align_corners=False);
- the head dropped (initialised afresh) or, with head="slice", cut to the first K classes when
  the class count differs;
- into a VideoMambaPro config with bwd_shares_delta: dt_proj_b and x_proj_b's dt rows dropped.

Anything else that does not fit (another model size, depth or patch size) is an error naming
the first tensor concerned; nothing is loaded partially.
"""

import collections
import dataclasses
import re

import numpy as np

from vmp_jax.interop import state_dict
from vmp_jax.models.config import ModelConfig

PREFIXES = ("module.", "backbone.", "encoder.")
HEAD_MODES = ("drop", "slice")


@dataclasses.dataclass
class Report:
    """What `adapt` did, tensor by tensor."""

    loaded: list[str] = dataclasses.field(default_factory=list)  # taken as they were
    adapted: list[str] = dataclasses.field(default_factory=list)  # "name: what was done"
    initialised: list[str] = dataclasses.field(default_factory=list)  # "name: why"
    dropped: list[str] = dataclasses.field(default_factory=list)  # "name: why"

    def lines(self) -> list[str]:
        """One line per change; the same change in every layer is one `layers.*.` line."""
        out = [f"loaded {len(self.loaded)} tensors unchanged"]
        for title, items in (
            ("adapted", self.adapted),
            ("initialised", self.initialised),
            ("dropped", self.dropped),
        ):
            per_layer = collections.Counter(
                re.sub(r"^layers\.\d+\.", "layers.*.", i) for i in items
            )
            out += [
                f"{title} {item}" + (f" (in {n} layers)" if n > 1 else "")
                for item, n in per_layer.items()
            ]
        return out


def strip_prefixes(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names without a leading `module.`, `backbone.` or `encoder.` (repeatedly)."""
    out = {}
    for name, value in tensors.items():
        while name.startswith(PREFIXES):
            name = name.split(".", 1)[1]
        out[name] = value
    return out


def adapt(
    tensors: dict[str, np.ndarray], cfg: ModelConfig, init: dict[str, np.ndarray], *, head="drop"
) -> tuple[dict[str, np.ndarray], Report]:
    """The released `tensors` reshaped to the model of `cfg`; `init` (the same model's freshly
    initialised state dict) supplies what the checkpoint lacks. Returns (tensors, report); the
    result still goes through `state_dict.check_shapes`."""
    if head not in HEAD_MODES:
        raise ValueError(f"head must be one of {HEAD_MODES}, got {head!r}")
    tensors, report = dict(strip_prefixes(tensors)), Report()
    _inflate_patch(tensors, report)
    _resize_positions(tensors, cfg, init, report)
    _fit_head(tensors, cfg, init, head, report)
    if cfg.bwd_shares_delta:
        _drop_backward_delta(tensors, cfg, report)
    # Each item starts with its tensor's name (x_proj_b's dropped rows: a tensor cut, not gone).
    changes = report.adapted + report.initialised + report.dropped
    changed = {re.split("[: ]", item)[0] for item in changes}
    report.loaded = [name for name in tensors if name not in changed]
    return tensors, report


def _inflate_patch(tensors, report) -> None:
    w = tensors.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 4:  # Conv2d (C, c, p, p) -> Conv3d (C, c, 1, p, p)
        tensors["patch_embed.proj.weight"] = w[:, :, None]
        report.adapted.append("patch_embed.proj.weight: image kernel inflated to one frame")


def _resize_positions(tensors, cfg, init, report) -> None:
    pos = tensors.get("pos_embed")
    want = cfg.grid
    if pos is not None and pos.ndim == 3 and pos.shape[1] != 1 + want * want:
        have = int(round(np.sqrt(pos.shape[1] - 1)))
        if have * have + 1 != pos.shape[1]:
            raise state_dict.StateDictError(
                f"tensor pos_embed has shape {pos.shape}: not 1 + a square grid of positions"
            )
        grid = pos[0, 1:].reshape(have, have, -1).transpose(2, 0, 1)[None]  # (1, C, g, g)
        grid = _interpolate(grid, (want, want), "bicubic")[0].reshape(pos.shape[2], -1).T
        tensors["pos_embed"] = np.concatenate([pos[:, :1], grid[None]], axis=1)
        report.adapted.append(f"pos_embed: bicubic {have}x{have} -> {want}x{want} positions")
    temporal = tensors.get("temporal_pos_embedding")
    if temporal is None:
        tensors["temporal_pos_embedding"] = init["temporal_pos_embedding"]
        report.initialised.append("temporal_pos_embedding: not in the checkpoint (image model)")
    elif temporal.ndim == 3 and temporal.shape[1] != cfg.num_frames:
        resized = _interpolate(temporal.transpose(0, 2, 1), (cfg.num_frames,), "linear")
        tensors["temporal_pos_embedding"] = resized.transpose(0, 2, 1)
        report.adapted.append(
            f"temporal_pos_embedding: linear {temporal.shape[1]} -> {cfg.num_frames} frames"
        )


def _interpolate(x: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    torch = state_dict.require_torch()
    out = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(x)), size=size, mode=mode, align_corners=False
    )
    return out.numpy()


def _fit_head(tensors, cfg, init, mode, report) -> None:
    weight, bias = tensors.get("head.weight"), tensors.get("head.bias")
    if weight is None or bias is None or weight.shape[0] == cfg.num_classes:
        return
    found = weight.shape[0]
    if mode == "slice" and found > cfg.num_classes:
        k = cfg.num_classes
        tensors["head.weight"], tensors["head.bias"] = weight[:k], bias[:k]
        for name in ("head.weight", "head.bias"):
            report.adapted.append(f"{name}: first {cfg.num_classes} of {found} classes")
        return
    if mode == "slice":
        raise state_dict.StateDictError(
            f"tensor head.weight has {found} classes; cannot slice {cfg.num_classes} from it"
        )
    tensors["head.weight"], tensors["head.bias"] = init["head.weight"], init["head.bias"]
    for name in ("head.weight", "head.bias"):
        report.initialised.append(f"{name}: {found} classes in the file, {cfg.num_classes} here")


def _drop_backward_delta(tensors, cfg, report) -> None:
    """VideoMambaPro's backward scan reuses the forward delta: no dt_proj_b, x_proj_b = (B, C)."""
    for i in range(cfg.depth):
        mixer = f"layers.{i}.mixer"
        for part in ("weight", "bias"):
            if tensors.pop(f"{mixer}.dt_proj_b.{part}", None) is not None:
                report.dropped.append(f"{mixer}.dt_proj_b.{part}: VMP shares the forward delta")
        x_proj = tensors.get(f"{mixer}.x_proj_b.weight")
        if x_proj is not None and x_proj.shape[0] == cfg.rank + 2 * cfg.d_state:
            tensors[f"{mixer}.x_proj_b.weight"] = x_proj[cfg.rank :]
            report.dropped.append(f"{mixer}.x_proj_b.weight rows 0..{cfg.rank - 1}: its dt rows")
