"""`vmp parity`: the JAX model and its exported PyTorch twin on the same inputs.

Both get the same weights (a checkpoint's or a fresh initialisation's), the PyTorch model
through the exported state dict, and the same inputs: the centre view of each validation
video of the config, or random normal videos. Reported: the largest logit difference, absolute
and relative to the largest JAX logit, and on how many inputs the top-1 class agrees. The JAX
side runs in the config's `model.dtype` on the default backend (so on a GPU, bfloat16 is
`--config.model.dtype=bfloat16`); the PyTorch side is float32 on the CPU.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmp_jax.engine.state import model_with_params
from vmp_jax.experiment import model_config
from vmp_jax.interop import convert, state_dict


@dataclasses.dataclass(frozen=True)
class Parity:
    inputs: int
    max_abs: float  # max |logit_jax - logit_torch|
    max_rel: float  # max_abs / max |logit_jax|
    top1_agree: int  # inputs whose argmax agrees
    backend: str
    dtype: str

    def lines(self) -> list[str]:
        return [
            f"JAX ({self.backend}, {self.dtype}) vs PyTorch (cpu, float32) on {self.inputs} inputs",
            f"max |logit difference| {self.max_abs:.3e}, relative {self.max_rel:.3e}",
            f"top-1 agrees on {self.top1_agree} of {self.inputs}",
        ]


def models(config, checkpoint_path=None, *, seed=0):
    """(JAX model in eval mode, PyTorch model in eval mode) with the same weights."""
    from vmp_jax.interop.torch_model import VideoMambaPro

    torch = state_dict.require_torch()
    cfg = model_config(config)
    params = convert.model_params(config, checkpoint_path, seed=seed)
    model = model_with_params(cfg, params)
    model.eval()
    twin = VideoMambaPro(**dataclasses.asdict(cfg))
    tensors = state_dict.to_state_dict(params, cfg)
    twin.load_state_dict({k: torch.tensor(v) for k, v in tensors.items()}, strict=True)
    return model, twin.eval()


def inputs(config, *, random: int = 0, limit: int | None = None, seed: int = 0):
    """Yields float32 (1, T, S, S, 3) videos: `random` normal ones, else the centre view of
    each validation video of the config (the first `limit`)."""
    cfg = model_config(config)
    if random:
        rng = np.random.default_rng(seed)
        for _ in range(random):
            shape = (1, cfg.num_frames, cfg.img_size, cfg.img_size, cfg.channels)
            yield rng.standard_normal(shape, np.float32)
        return
    from vmp_jax.data import pipeline, sources

    if not config.data.val_list and config.data.source != "tfds":
        raise ValueError("no validation data: set data.val_list, or use --random N")
    source = sources.open_source(config.data, "val")
    settings = dataclasses.replace(
        pipeline.ClipSettings.from_config(config), num_clips=1, num_crops=1
    )
    for i in range(len(source) if limit is None else min(limit, len(source))):
        yield pipeline.test_views(source[i], settings)


def compare(config, checkpoint_path=None, *, random: int = 0, limit=None, seed=0) -> Parity:
    torch = state_dict.require_torch()
    model, twin = models(config, checkpoint_path, seed=seed)
    forward = nnx.jit(lambda m, x: m(x))
    max_abs, scale, agree, n = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for video in inputs(config, random=random, limit=limit, seed=seed):
            ours = np.asarray(forward(model, jnp.asarray(video)), np.float64)  # (1, K)
            theirs = twin(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).double().numpy()
            max_abs = max(max_abs, float(np.abs(ours - theirs).max()))
            scale = max(scale, float(np.abs(ours).max()))
            agree += int(ours.argmax() == theirs.argmax())
            n += 1
    return Parity(n, max_abs, max_abs / scale, agree, jax.default_backend(), model.cfg.dtype)
