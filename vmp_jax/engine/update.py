"""The end of every train step: the optimiser and EMA updates, and the guard that keeps the
old state when anything is not finite (`steps` and `detection_steps` share them)."""

import jax
import jax.numpy as jnp
from flax import nnx

from vmp_jax.engine.state import Trainer


def all_finite(*trees) -> jax.Array:
    """One boolean: whether every element of every floating-point array in `trees` is finite."""
    leaves = [x for t in trees for x in jax.tree.leaves(t) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def keep_unless(finite: jax.Array, new, old):
    """`new` where `finite`, else `old`, leaf by leaf (the select fuses into the update's own
    loops: no copy of the state). PRNG keys are taken from `new`: a step never changes them."""

    def pick(n, o):
        if jax.dtypes.issubdtype(n.dtype, jax.dtypes.prng_key):
            return n
        return jnp.where(finite, n, o)

    return jax.tree.map(pick, new, old)


def apply_gradients(trainer: Trainer, parts, loss, grads) -> jax.Array:
    """The optimiser update and the EMA update, in place on `parts`; returns whether the loss,
    the gradients and the new weights are all finite (the caller keeps the old state if not)."""
    parts.optimizer.update(parts.model, grads)
    if parts.ema is not None:
        decay = trainer.ema_decay
        ema = jax.tree.map(
            lambda e, p: decay * e + (1 - decay) * p,
            nnx.state(parts.ema, nnx.Param),
            nnx.state(parts.model, nnx.Param),
        )
        nnx.update(parts.ema, ema)
    return all_finite(loss, grads, nnx.state(parts.model, nnx.Param))
