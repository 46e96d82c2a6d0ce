"""The explicit table between our parameters and VideoMamba's PyTorch state dict (SPEC section 7).

Each `Entry` names one tensor on both sides and the `Layout` that converts it: no name is
derived by string substitution and no transpose is guessed from a shape. `table(cfg)` lists
every tensor of the model `cfg` describes, in VideoMamba's state-dict order; VideoMambaPro's
`bwd_shares_delta` drops `dt_proj_b` and leaves `x_proj_b` with 2N rows (B and C only).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from vmp_jax.models.config import ModelConfig
from vmp_jax.models.videomamba import abstract_params


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor's JAX array becomes its PyTorch one and back (exact: only reshapes and
    transposes)."""

    name: str
    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray], np.ndarray]


SAME = Layout("same", lambda x: x, lambda x: x)
# nnx.Linear kernel (in, out) <-> torch.nn.Linear weight (out, in)
LINEAR = Layout("linear", lambda k: k.T, lambda w: w.T)
# our depthwise taps (w, d_inner) <-> Conv1d(groups=d_inner) weight (d_inner, 1, w)
CONV1D = Layout("conv1d", lambda k: k.T[:, None, :], lambda w: w[:, 0, :].T)
# our patch kernel (p, p, c, C) <-> Conv3d weight (C, c, 1, p, p)
PATCH = Layout(
    "patch",
    lambda k: k.transpose(3, 2, 0, 1)[:, :, None],
    lambda w: w[:, :, 0].transpose(2, 3, 1, 0),
)
# (n, C) <-> (1, n, C): pos_embed, temporal_pos_embedding
BATCHED = Layout("batched", lambda x: x[None], lambda x: x[0])
# (C,) <-> (1, 1, C): cls_token
TOKEN = Layout("token", lambda x: x[None, None], lambda x: x[0, 0])


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_name: str
    jax_path: tuple  # a path into nnx.state(model, nnx.Param)
    layout: Layout


def _direction(i: int, jax_dir: str, suffix: str, own_delta: bool) -> list[Entry]:
    """One scan direction's tensors; suffix "" (forward) or "_b" (backward)."""
    mixer, path = f"layers.{i}.mixer", ("layers", i, "mixer", jax_dir)
    entries = [
        Entry(f"{mixer}.conv1d{suffix}.weight", (*path, "conv_kernel"), CONV1D),
        Entry(f"{mixer}.conv1d{suffix}.bias", (*path, "conv_bias"), SAME),
        Entry(f"{mixer}.x_proj{suffix}.weight", (*path, "x_proj", "kernel"), LINEAR),
    ]
    if own_delta:
        entries += [
            Entry(f"{mixer}.dt_proj{suffix}.weight", (*path, "dt_proj", "kernel"), LINEAR),
            Entry(f"{mixer}.dt_proj{suffix}.bias", (*path, "dt_proj", "bias"), SAME),
        ]
    a_log = "A_log" if suffix == "" else "A_b_log"
    return entries + [
        Entry(f"{mixer}.{a_log}", (*path, "A_log"), SAME),
        Entry(f"{mixer}.D{suffix}", (*path, "D"), SAME),
    ]


def _layer(i: int, cfg: ModelConfig) -> list[Entry]:
    mixer, path = f"layers.{i}.mixer", ("layers", i, "mixer")
    return [
        Entry(f"layers.{i}.norm.weight", ("layers", i, "norm", "weight"), SAME),
        Entry(f"{mixer}.in_proj.weight", (*path, "in_proj", "kernel"), LINEAR),
        *_direction(i, "fwd", "", own_delta=True),
        *_direction(i, "bwd", "_b", own_delta=not cfg.bwd_shares_delta),
        Entry(f"{mixer}.out_proj.weight", (*path, "out_proj", "kernel"), LINEAR),
    ]


def table(cfg: ModelConfig) -> list[Entry]:
    """Every parameter of the model `cfg` describes, in VideoMamba's state-dict order."""
    entries = [
        Entry("cls_token", ("embed", "cls_token"), TOKEN),
        Entry("pos_embed", ("embed", "pos_embed"), BATCHED),
        Entry("temporal_pos_embedding", ("embed", "temporal_pos_embedding"), BATCHED),
        Entry("patch_embed.proj.weight", ("embed", "patch_embed", "kernel"), PATCH),
        Entry("patch_embed.proj.bias", ("embed", "patch_embed", "bias"), SAME),
        Entry("head.weight", ("head", "kernel"), LINEAR),
        Entry("head.bias", ("head", "bias"), SAME),
    ]
    for i in range(cfg.depth):
        entries += _layer(i, cfg)
    return entries + [Entry("norm_f.weight", ("norm_f", "weight"), SAME)]


def torch_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The PyTorch shape of every tensor of `table(cfg)`, by its name."""
    params = abstract_params(cfg)
    return {
        e.torch_name: e.layout.to_torch(np.empty(params[e.jax_path].shape, np.float32)).shape
        for e in table(cfg)
    }
