"""The optimiser of SPEC section 6: AdamW, linear warm-up then cosine decay to `min_lr`, the
learning rate scaled by batch / lr_batch_base, no weight decay on norms, biases, position
embeddings, the cls token, A_log and D, and gradient clipping by global norm.

With `optim.layer_decay` d < 1 (fine-tuning recipes such as VideoMAE's AVA one), layer-wise
learning-rate decay: block i's updates (its lr and its weight decay, as PyTorch's AdamW with a
per-group lr) are scaled by d^(depth - i), the embedding's (patches, cls token, position
embeddings) by d^(depth + 1), norm_f and the head keep the full lr (`layer_scales`)."""

import jax
import numpy as np
import optax
from flax import nnx

from vmp_jax.models import layers

# Parameters that get no weight decay besides every 1-D one (norm weights, biases, D, cls token):
# the position embeddings and A_log (VideoMamba's `no_weight_decay` list plus mamba_ssm's
# `_no_weight_decay` on A_log and D).
NO_DECAY_NAMES = ("pos_embed", "temporal_pos_embedding", "cls_token", "A_log", "D")


def peak_lr(config) -> float:
    """base_lr x global batch / lr_batch_base (the papers' linear scaling rule)."""
    return config.optim.base_lr * config.data.batch_size / config.optim.lr_batch_base


def schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_epochs`, then cosine decay to `min_lr` at the end."""
    o = config.optim
    total = max(1, int(o.epochs * steps_per_epoch))
    warmup = min(int(o.warmup_epochs * steps_per_epoch), total - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_lr(config),
        warmup_steps=warmup,
        decay_steps=total,
        end_value=o.min_lr,
    )


def decays(path, value) -> bool:
    """Whether the parameter at `path` gets weight decay."""
    names = tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
    ndim = value.ndim - (layers.stacked_at(names) is not None)  # a block's own dimensions
    return ndim > 1 and not any(n in NO_DECAY_NAMES for n in names)


def decay_mask(params: nnx.State):
    """A pytree of bools matching `params`."""
    return jax.tree_util.tree_map_with_path(decays, params)


def layer_scale(names: tuple[str, ...], decay: float, depth: int) -> float | np.ndarray:
    """The lr factor of the parameter at `names` (a path of the model's state): VideoMAE's
    `get_layer_id_for_vit` (embedding 0, block i i + 1, the rest depth + 1) to the factor
    decay^(depth + 1 - id). Stacked blocks (model.scan_layers): float32 (depth,), one per block."""
    if names[0] == layers.LAYERS:
        if layers.stacked_at(names) is not None:
            return (decay ** (depth - np.arange(depth))).astype(np.float32)
        return decay ** (depth - int(names[1]))
    return decay ** (depth + 1) if names[0] == "embed" else 1.0


def layer_scales(decay: float, depth: int) -> optax.GradientTransformation:
    """Scales each parameter's update by its `layer_scale` (after AdamW: lr and weight decay
    alike). Stateless."""

    def scale(path, update):
        names = tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        factor = np.asarray(layer_scale(names, decay, depth), np.float32)
        factor = factor.reshape(factor.shape + (1,) * (update.ndim - factor.ndim))
        return update * factor.astype(update.dtype)

    def update(updates, state, params=None):
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    o = config.optim
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    parts.append(
        optax.adamw(
            schedule(config, steps_per_epoch),
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            mask=decay_mask,
        )
    )
    layer_decay = o.get("layer_decay", 1.0)  # configs saved before the key have none
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"optim.layer_decay must be in (0, 1], got {layer_decay}")
    if layer_decay < 1.0:  # (only then: the optimiser state keeps its layout otherwise)
        parts.append(layer_scales(layer_decay, config.model.depth))
    return optax.chain(*parts)
