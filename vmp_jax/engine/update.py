"""What the classification and detection steps share (`steps`, `detection_steps`): the
gradient over micro-batches, the optimiser and EMA updates, the guard that keeps the old state
when anything is not finite, the metrics of a train step, and the jit of both steps with
their shardings. Each step module brings only its loss and what its eval step computes."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vmp_jax.engine import sharding
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


def mean_gradients(model, batch: dict, accum_steps: int, loss_fn, zeros: tuple):
    """(mean loss, summed statistics, mean gradients) of `loss_fn` over `accum_steps`
    micro-batches, summed by a scan (the activations of one micro-batch alive at a time); the
    model's RNG counts advance as its layers draw.

    Args:
      batch: {key: (B, ...)}: every array is cut into accum_steps micro-batches (B / accum_steps
        each): pass only what `loss_fn` reads.
      loss_fn: (model, micro-batch) -> (scalar loss, tuple of statistics summed over the
        micro-batches: correct predictions, counts).
      zeros: the statistics' starting sums (their dtypes: the sums').
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest, mb):
        # `rest` (RNG streams) is not differentiated, so jax passes its Variables in unchanged;
        # rebuilding them here lets drop path advance its RNG counts inside this trace.
        rest = jax.tree.map(lambda x: x, rest)
        model = nnx.merge(graphdef, params, rest)
        value, statistics = loss_fn(model, mb)
        return value, (nnx.state(model, nnx.Not(nnx.Param)), statistics)

    def micro(carry, mb):  # mb: one micro-batch
        rest, grad_sum, loss_sum, sums = carry
        (value, (rest, statistics)), grads = jax.value_and_grad(loss, has_aux=True)(
            params, rest, mb
        )
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        sums = tuple(s + x for s, x in zip(sums, statistics, strict=True))
        return (rest, grad_sum, loss_sum + value, sums), None

    micro_batches = {k: v.reshape(accum_steps, -1, *v.shape[1:]) for k, v in batch.items()}
    init = (rest, jax.tree.map(jnp.zeros_like, params), jnp.float32(0), zeros)
    (rest, grads, loss_sum, sums), _ = jax.lax.scan(micro, init, micro_batches)
    nnx.update(model, rest)
    return loss_sum / accum_steps, sums, jax.tree.map(lambda g: g / accum_steps, grads)


def jit_train_step(trainer: Trainer, schedule, gradients):
    """The jitted train step (state, batch) -> (state, metrics), the state donated, the batch
    sharded over the batch axes, the metrics replicated.

    `gradients(model, batch, step) -> (mean loss, accuracy, mean gradients)` is the task's
    part; the rest is every task's: the optimiser and EMA updates, and the state kept as it
    was when the loss, gradients or new weights are not all finite. metrics: loss, accuracy,
    grad_norm, lr (`schedule(step)`) and nonfinite (1: the state came back unchanged)."""

    def train_step(state, batch):
        before = jax.tree.map(lambda x: x, state)  # new Variables: `parts` updates the given ones
        parts = trainer.parts(state, train=True)
        step = parts.optimizer.step[...]
        loss, accuracy, grads = gradients(parts.model, batch, step)
        finite = apply_gradients(trainer, parts, loss, grads)
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(step),
            "nonfinite": 1 - finite.astype(jnp.int32),
        }
        return keep_unless(finite, nnx.state(parts), before), metrics

    return jax.jit(
        train_step,
        in_shardings=(trainer.shardings, sharding.batch_sharding(trainer.mesh)),
        out_shardings=(trainer.shardings, sharding.replicated(trainer.mesh)),
        donate_argnums=0,
    )


def jit_eval_step(trainer: Trainer, eval_step):
    """`eval_step(state, batch)` jitted: the batch sharded over the batch axes, the result
    replicated (every process reads the whole global batch's)."""
    return jax.jit(
        eval_step,
        in_shardings=(trainer.shardings, sharding.batch_sharding(trainer.mesh)),
        out_shardings=sharding.replicated(trainer.mesh),
    )
