"""The 3D patch embedding (tubelet 1 x p x p) and VideoMamba's position embeddings.

Tokens are time-major, [CLS, f0p0 .. f0p(P-1), f1p0 ..]: a spatial `pos_embed` of 1 + P rows is
added to every frame's patches (its row 0 to CLS) and a `temporal_pos_embedding` of T rows to
the patch tokens only. Other frame counts and resolutions than the stored ones are handled by
interpolating the embeddings: bicubic over the spatial grid, linear over time (an image model,
T = 1, thus inflates to video by repetition).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vmp_jax.models import init
from vmp_jax.models.config import ModelConfig


def resize_spatial(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(1 + g*g, C) -> (1 + gh*gw, C) for grid (gh, gw): bicubic over the square patch grid
    the embedding was stored for, the CLS row kept."""
    g = math.isqrt(pos.shape[0] - 1)
    if (g, g) == tuple(grid):
        return pos
    patches = pos[1:].reshape(g, g, -1)
    patches = jax.image.resize(patches, (*grid, patches.shape[-1]), "cubic", antialias=False)
    return jnp.concatenate([pos[:1], patches.reshape(grid[0] * grid[1], -1)], axis=0)


def resize_temporal(pos: jax.Array, frames: int) -> jax.Array:
    """(T, C) -> (frames, C), linear (align_corners=False, as PyTorch's F.interpolate)."""
    if pos.shape[0] == frames:
        return pos
    return jax.image.resize(pos, (frames, pos.shape[1]), "linear", antialias=False)


def check_video(video: jax.Array, cfg: ModelConfig) -> None:
    """Raise ValueError naming the shape unless video is (b, T, H, W, channels) with H, W
    divisible by the patch size."""
    expected = (
        f"(batch, frames, height, width, {cfg.channels}) with height and width divisible by "
        f"{cfg.patch_size}"
    )
    shape = tuple(video.shape)
    if video.ndim != 5:
        raise ValueError(f"video has shape {shape} (rank {video.ndim}); expected {expected}")
    if shape[-1] != cfg.channels:
        raise ValueError(f"video has shape {shape} with {shape[-1]} channels; expected {expected}")
    if shape[2] % cfg.patch_size or shape[3] % cfg.patch_size:
        raise ValueError(f"video has shape {shape}; expected {expected}")


class PatchEmbed(nnx.Module):
    """Conv3d with kernel = stride = (1, p, p) and bias, written as a matmul over patches:
    (b, T, H, W, c) -> (b, T, H/p, W/p, C)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        p, c, C = cfg.patch_size, cfg.channels, cfg.embed_dim
        bound = 1.0 / math.sqrt(p * p * c)  # PyTorch's Conv3d default
        self.patch = p
        self.kernel = init.param(
            init.uniform(bound), rngs, (p, p, c, C), "patch_h", "patch_w", "rgb", "embed"
        )
        self.bias = init.param(init.uniform(bound), rngs, (C,), "embed")

    def __call__(self, video):
        b, t, h, w, c = video.shape
        p = self.patch
        x = video.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
        x = x.reshape(b, t, h // p, w // p, p * p * c)
        kernel = self.kernel[...].reshape(p * p * c, -1).astype(video.dtype)
        return x @ kernel + self.bias[...].astype(video.dtype)


class Embedding(nnx.Module):
    """video (b, T, H, W, c) -> tokens (b, 1 + T*P, C) with CLS and position embeddings."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        C = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg, rngs=rngs)
        self.cls_token = init.param(init.zeros, rngs, (C,), "embed")
        self.pos_embed = init.param(
            init.trunc_normal, rngs, (1 + cfg.grid**2, C), "tokens", "embed"
        )
        self.temporal_pos_embedding = init.param(
            init.zeros, rngs, (cfg.num_frames, C), "frames", "embed"
        )

    def __call__(self, video):
        check_video(video, self.cfg)
        dtype = self.cfg.compute_dtype
        x = self.patch_embed(video.astype(dtype))  # (b, T, gh, gw, C)
        b, t, gh, gw, C = x.shape
        P = gh * gw
        x = x.reshape(b, t, P, C)
        pos = resize_spatial(self.pos_embed[...], (gh, gw)).astype(dtype)  # (1 + P, C)
        temporal = resize_temporal(self.temporal_pos_embedding[...], t).astype(dtype)  # (T, C)
        x = x + pos[None, None, 1:] + temporal[None, :, None]
        cls = (self.cls_token[...].astype(dtype) + pos[0])[None, None]  # (1, 1, C)
        return jnp.concatenate([jnp.broadcast_to(cls, (b, 1, C)), x.reshape(b, t * P, C)], 1)
