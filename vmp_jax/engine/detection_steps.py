"""The jitted train and eval steps of the AVA detector (`model.task="ava"`, SPEC section 8).

train_step: the boxes' action logits (`VideoMambaDetector`), sigmoid binary cross-entropy per
(box, action) averaged over the actions and the valid boxes of a micro-batch (SlowFast's and
VideoMAE's `BCELoss(reduction="mean")` over the real boxes), the gradient summed over
`accum_steps` micro-batches by a scan, the optimiser and EMA updates and the non-finite guard
of `update` (a step whose loss, gradients or weights are not all finite changes nothing). The
boxes are ground truth jittered on the host (`ava_clips`); no mixup, no label smoothing.
Boxes are padded to the static `ava.max_boxes` with a mask: one compiled program.
eval_step: each box's sigmoid times its person score.

Batch (global B keyframes, K = ava.max_boxes, A = model.num_classes; `data.ava_clips`):
    video (B, T, S, S, 3) float32, boxes (B, K, 4) float32 input pixels, box_mask (B, K) bool,
    labels (B, K, A) float32 multi-hot; at evaluation person_scores (B, K) float32 too.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vmp_jax.engine import sharding
from vmp_jax.engine.state import Trainer
from vmp_jax.engine.update import apply_gradients, keep_unless
from vmp_jax.ssm import batch_sharded

TRAIN_KEYS = ("video", "boxes", "box_mask", "labels")  # what a train step reads
EVAL_KEYS = ("video", "boxes", "person_scores")  # what an eval step reads


def box_loss(logits, labels, mask):
    """(mean binary cross-entropy over the valid boxes' actions, correct (box, action)
    decisions at probability 0.5, valid (box, action) pairs): logits, labels (b, K, A), mask
    (b, K) bool. A batch without a valid box has loss 0."""
    weight = mask.astype(jnp.float32)[..., None]  # (b, K, 1)
    per_pair = optax.sigmoid_binary_cross_entropy(logits, labels)  # (b, K, A)
    pairs = weight.sum() * logits.shape[-1]
    loss = (per_pair * weight).sum() / jnp.maximum(pairs, 1.0)
    correct = (((logits > 0) == (labels > 0.5)) * weight).sum()
    return loss, correct, pairs


def _loss(params, rest, graphdef, mb):
    """A micro-batch's loss and (RNG state, correct decisions, valid pairs)."""
    rest = jax.tree.map(lambda x: x, rest)  # see steps._loss: RNG counts advance in the trace
    model = nnx.merge(graphdef, params, rest)
    logits = model(mb["video"], mb["boxes"])  # (b, K, A) float32
    loss, correct, pairs = box_loss(logits, mb["labels"], mb["box_mask"])
    return loss, (nnx.state(model, nnx.Not(nnx.Param)), correct, pairs)


def _gradients(model, batch: dict, accum_steps: int):
    """Mean loss, correct decisions, valid pairs and mean gradients over the micro-batches."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def micro(carry, mb):
        rest, grad_sum, loss_sum, correct_sum, pair_sum = carry
        (loss, (rest, correct, pairs)), grads = jax.value_and_grad(_loss, has_aux=True)(
            params, rest, graphdef, mb
        )
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (rest, grad_sum, loss_sum + loss, correct_sum + correct, pair_sum + pairs), None

    micro_batches = {k: batch[k].reshape(accum_steps, -1, *batch[k].shape[1:]) for k in TRAIN_KEYS}
    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (rest, zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0))
    (rest, grads, loss, correct, pairs), _ = jax.lax.scan(micro, init, micro_batches)
    nnx.update(model, rest)
    mean_grads = jax.tree.map(lambda g: g / accum_steps, grads)
    return loss / accum_steps, correct / jnp.maximum(pairs, 1.0), mean_grads


def make_train_step(trainer: Trainer, *, accum_steps: int, schedule):
    """(state, batch) -> (state, metrics); batch: TRAIN_KEYS sharded over the batch axes.
    metrics: loss, accuracy (of the valid boxes' (box, action) decisions at 0.5), grad_norm,
    lr, nonfinite (1: the state came back unchanged)."""

    def train_step(state, batch):
        before = jax.tree.map(lambda x: x, state)  # new Variables: `parts` updates the given ones
        parts = trainer.parts(state, train=True)
        step = parts.optimizer.step[...]
        with batch_sharded(trainer.mesh):  # custom kernels run per device on its shard
            loss, accuracy, grads = _gradients(parts.model, batch, accum_steps)
        finite = apply_gradients(trainer, parts, loss, grads)
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(step),
            "nonfinite": 1 - finite.astype(jnp.int32),
        }
        return keep_unless(finite, nnx.state(parts), before), metrics

    data = sharding.batch_sharding(trainer.mesh)
    return jax.jit(
        train_step,
        in_shardings=(trainer.shardings, data),
        out_shardings=(trainer.shardings, sharding.replicated(trainer.mesh)),
        donate_argnums=0,
    )


def make_eval_step(trainer: Trainer, *, ema: bool = False):
    """(state, batch of EVAL_KEYS) -> action scores (B, K, A) float32, replicated: each box's
    sigmoid times its person score (padding boxes score whatever: mask them)."""

    def eval_step(state, batch):
        model = trainer.model(state, ema=ema)
        with batch_sharded(trainer.mesh):
            logits = model(batch["video"], batch["boxes"])  # (B, K, A)
        return jax.nn.sigmoid(logits) * batch["person_scores"][..., None]

    return jax.jit(
        eval_step,
        in_shardings=(trainer.shardings, sharding.batch_sharding(trainer.mesh)),
        out_shardings=sharding.replicated(trainer.mesh),
    )


def batch_shapes(config) -> dict:
    """{key: (shape, dtype)} of a global training batch of an AVA config (TRAIN_KEYS)."""
    d, b, k = config.data, config.data.batch_size, config.ava.max_boxes
    video = (b, d.num_frames, d.img_size, d.img_size, config.model.channels)
    return {
        "video": (video, jnp.float32),
        "boxes": ((b, k, 4), jnp.float32),
        "box_mask": ((b, k), jnp.bool_),
        "labels": ((b, k, config.model.num_classes), jnp.float32),
    }
