"""`vmp params` and `vmp flops`: the model's size and cost, next to the paper's figures."""

import jax
import numpy as np

from vmp_jax.models.config import SIZES, ModelConfig
from vmp_jax.models.flops import forward_flops
from vmp_jax.models.videomamba import abstract_params

# The paper's rounded parameter counts (M) and IN-1K GFLOPs at 224 px (its Table 15), keyed by
# (VideoMambaPro?, embed width).
PAPER = {
    (False, 192): (7, 1.1),
    (False, 384): (26, 4.3),
    (False, 576): (74, 12.7),
    (True, 192): (7, 1.1),
    (True, 384): (25, 4.2),
    (True, 576): (72, 12.4),
}
SIZE_NAMES = {"ti": "Ti", "s": "S", "m": "M"}


def _name(cfg: ModelConfig) -> str:
    sizes = {embed: SIZE_NAMES[size] for size, (embed, _) in SIZES.items()}
    size = sizes.get(cfg.embed_dim, f"C{cfg.embed_dim}")
    return f"{'VideoMambaPro' if cfg.is_pro else 'VideoMamba'}-{size}"


def _paper(cfg: ModelConfig) -> tuple[float, float] | None:
    """The paper's (params M, IN-1K GFLOPs) for a preset's width and depth, else None."""
    depth = {embed: depth for embed, depth in SIZES.values()}.get(cfg.embed_dim)
    return PAPER.get((cfg.is_pro, cfg.embed_dim)) if cfg.depth == depth else None


def param_groups(cfg: ModelConfig) -> dict[str, int]:
    """Exact parameter counts by module group (the per-layer groups summed over the depth)."""
    groups: dict[str, int] = {}
    for path, variable in abstract_params(cfg).items():  # per-block paths in either layout
        parts = [str(p) for p in path]
        key = ".".join(["layers.*", *parts[2:4]] if parts[0] == "layers" else parts[:2])
        key = key.removesuffix(".kernel").removesuffix(".bias")
        groups[key] = groups.get(key, 0) + int(np.prod(variable.shape))
    return groups


def params_report(cfg: ModelConfig) -> str:
    groups = param_groups(cfg)
    total = sum(groups.values())
    lines = [
        f"{_name(cfg)}: {cfg.num_classes} classes, {cfg.num_frames} frames, {cfg.img_size} px",
        "",
        "| group | parameters |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:,} |" for k, v in groups.items()]
    lines.append(f"| **total** | **{total:,}** ({total / 1e6:.2f}M) |")
    paper = _paper(cfg)
    if paper:
        lines.append(f"\npaper: {paper[0]}M (rounded; 400 classes, 8 frames, 224 px)")
    return "\n".join(lines)


def flops_report(cfg: ModelConfig, views: int) -> str:
    flops = forward_flops(cfg)
    lines = [
        f"{_name(cfg)}: one view of {cfg.num_frames} x {cfg.img_size} x {cfg.img_size} on "
        f"{jax.default_backend()}",
        f"  {flops / 1e9:.4g} GFLOPs (XLA: a multiply-add is 2 FLOPs), "
        f"{flops / 2e9:.4g} GMACs (fvcore's, and the papers', 'FLOPs')",
        f"  x {views} views: {flops * views / 1e9:.4g} GFLOPs, {flops * views / 2e9:.4g} GMACs",
    ]
    paper = _paper(cfg)
    if paper:
        lines.append(f"  paper (IN-1K, one 224 px image): {paper[1]}G")
    return "\n".join(lines)
