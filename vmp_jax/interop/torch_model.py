"""VideoMamba and VideoMambaPro in plain PyTorch: the model `vmp export` writes weights for.

    from vmp_jax.interop.torch_model import VideoMambaPro
    model = VideoMambaPro.from_exported("vmp.safetensors")   # reads vmp.json beside it
    logits = model(video)        # video (batch, 3, T, H, W), float32, normalised as in training

It computes what vmp_jax's `VideoMamba` computes (SPEC sections 1-3 and 5) with VideoMamba's
state-dict names and layouts, so a released VideoMamba checkpoint loads into it too
(`VideoMambaPro(**config).load_state_dict(sd)` with the config of that checkpoint). The
selective scan is a plain sequential loop in float32: no CUDA extension, runs anywhere torch
does, slowly (VideoMamba-Ti at 8x224: a few seconds per video on a CPU). This file depends on
torch alone (safetensors to read .safetensors), so it can be copied into another project.
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VideoMambaPro", "selective_scan"]


def selective_scan(u, delta, A, B, C, D, z, *, mask_diagonal=False, residual=False):
    """One causal scan, token by token, in float32 (memory: a few (b, l, d, n) arrays).

    u, delta, z (b, l, d); A (d, n); B, C (b, l, n); D (d,) -> y (b, l, d):
      h_t = a_t h_{t-1} [+ r_{t-1}] + b_t u_t,  a_t = exp(delta_t A), b_t = delta_t B_t
      r_t = r_{t-1} + a_t b_t u_t                          (residual SSM, SPEC section 3)
      y_t = C_t . (h_t [- b_t u_t]) + D u_t                (masked diagonal, SPEC section 2)
      y = y * silu(z)
    """
    u, delta, z = u.float(), delta.float(), z.float()
    B, C = B.float(), C.float()
    a = torch.exp(delta[..., None] * A)  # (b, l, d, n)
    bu = (delta * u)[..., None] * B[:, :, None]  # (b, l, d, n)
    carry = a * bu  # what each token adds to the residual sum r
    states = torch.empty_like(a)
    h = torch.zeros_like(a[:, 0])
    r = torch.zeros_like(h)
    for t in range(u.shape[1]):
        h = a[:, t] * h + bu[:, t] + r if residual else a[:, t] * h + bu[:, t]
        if residual:
            r = r + carry[:, t]
        states[:, t] = h
    if mask_diagonal:
        states = states - bu
    y = torch.einsum("bldn,bln->bld", states, C) + D * u
    return y * F.silu(z)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class BiMamba(nn.Module):
    """VideoMamba's bidirectional mixer ("v2") with VideoMambaPro's switches. The backward
    direction runs on the flipped sequence and is flipped back; the outputs are summed."""

    def __init__(self, dim, *, d_state, expand, d_conv, dt_rank, mask, residual, shares_delta):
        super().__init__()
        di = expand * dim
        self.d_state, self.dt_rank = d_state, dt_rank
        self.mask, self.residual, self.shares_delta = mask, residual, shares_delta
        self.in_proj = nn.Linear(dim, 2 * di, bias=False)
        for suffix, own_delta in (("", True), ("_b", not shares_delta)):
            conv = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
            setattr(self, f"conv1d{suffix}", conv)
            rows = (dt_rank if own_delta else 0) + 2 * d_state
            setattr(self, f"x_proj{suffix}", nn.Linear(di, rows, bias=False))
            if own_delta:
                setattr(self, f"dt_proj{suffix}", nn.Linear(dt_rank, di, bias=True))
            a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(di, 1)
            setattr(self, "A_log" if suffix == "" else "A_b_log", nn.Parameter(a_log))
            setattr(self, f"D{suffix}", nn.Parameter(torch.ones(di)))
        self.out_proj = nn.Linear(di, dim, bias=False)

    def _direction(self, x, z, suffix, delta=None):
        """x, z (b, l, di) in this direction's scan order -> (y, delta)."""
        length = x.shape[1]
        conv = getattr(self, f"conv1d{suffix}")
        u = F.silu(conv(x.transpose(1, 2))[..., :length]).transpose(1, 2)
        proj = getattr(self, f"x_proj{suffix}")(u)
        if delta is None:
            dt, proj = proj[..., : self.dt_rank], proj[..., self.dt_rank :]
            delta = F.softplus(getattr(self, f"dt_proj{suffix}")(dt))
        B, C = proj[..., : self.d_state], proj[..., self.d_state :]
        A = -torch.exp(getattr(self, "A_log" if suffix == "" else "A_b_log").float())
        D = getattr(self, f"D{suffix}").float()
        mask = self.mask and suffix == "_b"
        y = selective_scan(u, delta, A, B, C, D, z, mask_diagonal=mask, residual=self.residual)
        return y, delta

    def forward(self, hidden):  # (b, l, dim)
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        y_f, delta = self._direction(x, z, "")
        delta_b = delta.flip(1) if self.shares_delta else None
        y_b, _ = self._direction(x.flip(1), z.flip(1), "_b", delta_b)
        return self.out_proj(y_f + y_b.flip(1))


class Block(nn.Module):
    """residual = residual + drop_path(hidden) (block 0: hidden); hidden = mixer(norm(residual))."""

    def __init__(self, dim, drop_path, **mixer):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.mixer = BiMamba(dim, **mixer)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden, residual):
        residual = hidden.float() if residual is None else residual + self.drop_path(hidden)
        return self.mixer(self.norm(residual)), residual


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, channels, dim):
        super().__init__()
        kernel = (1, patch_size, patch_size)
        self.proj = nn.Conv3d(channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, x):  # (b, c, T, H, W) -> (b, dim, T, H/p, W/p)
        return self.proj(x)


class VideoMambaPro(nn.Module):
    """video (b, channels, T, H, W) -> logits (b, num_classes).

    The keyword arguments are vmp_jax's `ModelConfig` fields (the JSON `vmp export` writes);
    with the three VideoMambaPro switches off it is VideoMamba. Weights: `from_exported`, or
    `load_state_dict` of a VideoMamba state dict.
    """

    def __init__(
        self,
        *,
        embed_dim=192,
        depth=24,
        d_state=16,
        expand=2,
        d_conv=4,
        dt_rank=None,
        patch_size=16,
        num_frames=8,
        img_size=224,
        num_classes=400,
        channels=3,
        drop_path_rate=0.0,
        head_dropout=0.0,
        bwd_mask_diagonal=False,
        residual_ssm=False,
        bwd_shares_delta=False,
        **_ignored,  # JAX-only settings: scan_algorithm, dtype, remat
    ):
        super().__init__()
        self.num_frames, self.img_size, self.channels = num_frames, img_size, channels
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, channels, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        mixer = dict(
            d_state=d_state,
            expand=expand,
            d_conv=d_conv,
            dt_rank=dt_rank or math.ceil(embed_dim / 16),
            mask=bwd_mask_diagonal,
            residual=residual_ssm,
            shares_delta=bwd_shares_delta,
        )
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        rates = [0.0, *rates[:-1], drop_path_rate]  # the branch entering each block, then the last
        self.layers = nn.ModuleList(Block(embed_dim, rates[i], **mixer) for i in range(depth))
        self.drop_path = DropPath(rates[-1])
        self.norm_f = RMSNorm(embed_dim)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_features(self, video):
        """video (b, c, T, H, W) -> the normalised CLS token (b, embed_dim)."""
        return self.tokens(video)[:, 0]

    def tokens(self, video):
        """video (b, c, T, H, W) -> every token after the final norm (b, 1 + T*P, embed_dim),
        the CLS token first."""
        expected = (self.channels, self.num_frames, self.img_size, self.img_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            want = ", ".join(map(str, expected))
            raise ValueError(f"video has shape {tuple(video.shape)}; expected (batch, {want})")
        x = self.patch_embed(video.float())  # (b, C, T, g, g)
        b, dim, t = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)  # (b, T, P, C)
        x = x + self.pos_embed[:, None, 1:] + self.temporal_pos_embedding[:, :, None]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, dim)
        hidden, residual = torch.cat([cls, x.reshape(b, -1, dim)], dim=1), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        return self.norm_f(residual + self.drop_path(hidden))

    def classify(self, tokens):
        """tokens after the final norm (b, 1 + T*P, embed_dim) -> logits (b, num_classes)."""
        return self.head(self.head_drop(tokens[:, 0]))

    def forward(self, video):
        return self.classify(self.tokens(video))

    @classmethod
    def from_exported(cls, path, *, map_location="cpu"):
        """The model of a `vmp export` file (.safetensors or .pth) and the JSON beside it, in
        eval mode; ValueError naming the first tensor that does not fit."""
        config_file = os.path.splitext(path)[0] + ".json"
        for f in (path, config_file):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{f} not found (vmp export writes the weights and a JSON)")
        with open(config_file) as f:
            model = cls(**json.load(f))
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device=str(map_location))
        else:
            state = torch.load(path, map_location=map_location, weights_only=True)
        expected = model.state_dict()
        for name, tensor in expected.items():
            found = state.get(name)
            if found is None or found.shape != tensor.shape:
                shape = None if found is None else tuple(found.shape)
                raise ValueError(
                    f"{path}: tensor {name}: expected shape {tuple(tensor.shape)}, found {shape}"
                )
        model.load_state_dict(state, strict=True)
        return model.eval()
