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

from vmp_jax.engine.state import Trainer
from vmp_jax.engine.update import jit_eval_step, jit_train_step, mean_gradients
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


def _loss(model, mb):
    """A micro-batch's loss, and its (correct decisions, valid pairs)."""
    logits = model(mb["video"], mb["boxes"])  # (b, K, A) float32
    loss, correct, pairs = box_loss(logits, mb["labels"], mb["box_mask"])
    return loss, (correct, pairs)


def make_train_step(trainer: Trainer, *, accum_steps: int, schedule):
    """(state, batch) -> (state, metrics); batch: TRAIN_KEYS sharded over the batch axes.
    metrics: loss, accuracy (of the valid boxes' (box, action) decisions at 0.5), grad_norm,
    lr, nonfinite (1: the state came back unchanged; `update.jit_train_step`)."""

    def gradients(model, batch, step):
        read = {k: batch[k] for k in TRAIN_KEYS}
        with batch_sharded(trainer.mesh):  # custom kernels run per device on its shard
            loss, (correct, pairs), grads = mean_gradients(
                model, read, accum_steps, _loss, (jnp.float32(0), jnp.float32(0))
            )
        return loss, correct / jnp.maximum(pairs, 1.0), grads

    return jit_train_step(trainer, schedule, gradients)


def make_eval_step(trainer: Trainer, *, ema: bool = False):
    """(state, batch of EVAL_KEYS) -> action scores (B, K, A) float32, replicated: each box's
    sigmoid times its person score (padding boxes score whatever: mask them)."""

    def eval_step(state, batch):
        model = trainer.model(state, ema=ema)
        with batch_sharded(trainer.mesh):
            logits = model(batch["video"], batch["boxes"])  # (B, K, A)
        return jax.nn.sigmoid(logits) * batch["person_scores"][..., None]

    return jit_eval_step(trainer, eval_step)


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
