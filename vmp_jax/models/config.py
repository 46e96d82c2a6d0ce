"""`ModelConfig`: every architectural choice of SPEC section 5, with the Ti/S/M presets.

Logical axis names (attached to every parameter, mapped to mesh axes by the training config):
  embed   the residual stream's channels (C)
  inner   the mixer's channels (d_inner = expand * C)
  state   the SSM state (N)
  dt_rank the rank of the delta projection
  proj    x_proj's output rows (dt_rank + 2N, or 2N)
  conv    the depthwise conv's taps
  patch   a patch's pixels (1 x 16 x 16 x 3)
  tokens  positions of the spatial grid (+ CLS); frames: temporal positions
  classes the head's outputs
"""

import dataclasses

import jax.numpy as jnp

from pallas_kernels.blocks import ScanBlocks
from pallas_kernels.scan_chunk import VARIANTS

# Size presets (SPEC section 5): embed width, depth.
SIZES = {"ti": (192, 24), "s": (384, 24), "m": (576, 32)}
TASKS = ("classify", "ava")  # ModelConfig.task


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """VideoMamba with VideoMambaPro's three switches (all False is VideoMamba)."""

    embed_dim: int = 192
    depth: int = 24
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None  # default ceil(embed_dim / 16)
    patch_size: int = 16
    num_frames: int = 8
    img_size: int = 224
    num_classes: int = 400
    channels: int = 3
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0
    bwd_mask_diagonal: bool = False
    residual_ssm: bool = False
    bwd_shares_delta: bool = False
    # The scan's tunables (vmp_jax.ssm.selective_scan): algorithm, the tiling of `chunked` and
    # `pallas` (ScanBlocks' fields) and the kernels' chunk variant.
    scan_algorithm: str = "auto"
    scan_chunk_size: int = ScanBlocks.chunk_size
    scan_channel_block: int | None = ScanBlocks.channel_block
    scan_num_warps: int = ScanBlocks.num_warps
    scan_subchunk_size: int = ScanBlocks.subchunk_size
    scan_segments: int | None = ScanBlocks.segments  # None: split for the GPU's SMs
    scan_tpu_channel_block: int = ScanBlocks.tpu_channel_block  # the TPU kernels' lanes
    scan_variant: str = "sequential"
    dtype: str = "float32"  # compute dtype; parameters, residual stream and scan state are f32
    remat: bool = False  # rematerialise each block in the backward pass
    scan_layers: bool = False  # the blocks as lax.scans over stacked weights: one block compiled
    # What the backbone's tokens feed (vmp_jax.models.detection.model_class): "classify", the
    # CLS token to a linear head (VideoMamba); "ava", each box's ROIAlign-pooled features to
    # the AVA actions (VideoMambaDetector, SPEC section 8). The parameter names are the same.
    task: str = "classify"

    def __post_init__(self):
        for name in ("embed_dim", "depth", "d_state", "expand", "d_conv", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"ModelConfig: img_size {self.img_size} is not divisible by patch_size "
                f"{self.patch_size}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"ModelConfig: dtype must be float32, bfloat16 or float16, got {self.dtype!r}"
            )
        try:
            _ = self.scan_blocks  # ScanBlocks checks the sizes
        except ValueError as e:
            raise ValueError(f"ModelConfig: scan_* block sizes: {e}") from None
        if self.scan_variant not in VARIANTS:
            raise ValueError(
                f"ModelConfig: scan_variant must be one of {VARIANTS}, got {self.scan_variant!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"ModelConfig: task must be one of {TASKS}, got {self.task!r}")
        for name in ("drop_path_rate", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"ModelConfig: {name} must be in [0, 1), got {getattr(self, name)}"
                )

    @property
    def scan_blocks(self) -> ScanBlocks:
        return ScanBlocks(
            self.scan_chunk_size,
            self.scan_channel_block,
            self.scan_num_warps,
            self.scan_subchunk_size,
            self.scan_segments,
            self.scan_tpu_channel_block,
        )

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def rank(self) -> int:
        return self.dt_rank or -(-self.embed_dim // 16)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.img_size // self.patch_size

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def is_pro(self) -> bool:
        return self.bwd_mask_diagonal or self.residual_ssm or self.bwd_shares_delta


def preset(size: str, *, pro: bool, **overrides) -> ModelConfig:
    """Ti/S/M ("ti", "s", "m") as VideoMamba (pro=False) or VideoMambaPro (all three switches)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; valid: {', '.join(SIZES)}")
    embed, depth = SIZES[size]
    fields = dict(
        embed_dim=embed,
        depth=depth,
        bwd_mask_diagonal=pro,
        residual_ssm=pro,
        bwd_shares_delta=pro,
    )
    return ModelConfig(**{**fields, **overrides})
