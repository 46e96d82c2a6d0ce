"""The jitted train and eval steps.

train_step: with data.augment_on=device, the crop, resize, flip, RandAugment, normalisation
and erasing of the uint8 frames on their canvas (`data.device_augment`); mixup/cutmix and
label smoothing over the global batch (`mixing.Mixing`); soft-target cross-entropy, the
gradient summed over `accum_steps` micro-batches by a scan (one optimiser update per global
batch, the activations of one micro-batch alive at a time), the optimiser update, and the EMA
update. A step whose loss, gradients or updated weights are not all finite changes nothing of
the state (weights, optimiser moments and step, EMA, RNG counts) and reports `nonfinite` 1; the
decision is made on global values, so every process takes the same one. The state is donated.
eval_step: the softmax of every view, averaged per video.
"""

import jax
import jax.numpy as jnp
import optax

from vmp_jax.data import resample
from vmp_jax.data.device_augment import DeviceAugment
from vmp_jax.engine import detection_steps, sharding
from vmp_jax.engine.mixing import Mixing
from vmp_jax.engine.state import Trainer
from vmp_jax.engine.update import all_finite, jit_eval_step, jit_train_step, mean_gradients
from vmp_jax.ssm import batch_sharded

# Defined in engine.update (shared with detection_steps), used by callers from here.
__all__ = ["all_finite"]


def _loss(model, mb):
    """Mean soft-target cross-entropy of one micro-batch, and its correct predictions."""
    logits = model(mb["video"])  # (b, K) float32
    loss = optax.softmax_cross_entropy(logits, mb["target"]).mean()
    return loss, (jnp.sum(jnp.argmax(logits, -1) == mb["label"]),)


def make_train_step(
    trainer: Trainer,
    *,
    accum_steps: int,
    schedule,
    mixing: Mixing,
    augment: DeviceAugment | None = None,
):
    """(state, batch) -> (state, metrics); batch: video (B, T, S, S, 3), label (B,), sharded
    over the batch axes (B, the global batch); with `augment` (data.augment_on=device), the
    video is uint8 frames on the canvas with their crop plans (`resample.PLAN_KEYS`), cropped,
    resized and augmented here first. metrics: loss, accuracy, grad_norm, lr and
    nonfinite (1: the state came back unchanged; `update.jit_train_step`)."""

    def gradients(model, batch, step):
        video = batch["video"]
        if augment is not None:  # canvases and crop plans -> augmented float32 clips
            video = augment(video, step, {k: batch[k] for k in resample.PLAN_KEYS})
        video, target = mixing(video, batch["label"], step)
        mixed = {"video": video, "target": target, "label": batch["label"]}
        with batch_sharded(trainer.mesh):  # custom kernels run per device on its shard
            loss, (correct,), grads = mean_gradients(
                model, mixed, accum_steps, _loss, (jnp.int32(0),)
            )
        return loss, correct / batch["label"].shape[0], grads

    return jit_train_step(trainer, schedule, gradients)


def make_eval_step(trainer: Trainer, *, ema: bool = False):
    """(state, video (B, V, T, S, S, 3)) -> probabilities (B, K), views averaged."""

    def eval_step(state, video):
        model = trainer.model(state, ema=ema)
        b, v = video.shape[:2]
        with batch_sharded(trainer.mesh):
            logits = model(video.reshape(b * v, *video.shape[2:]))  # (B V, K)
        return jax.nn.softmax(logits, -1).reshape(b, v, -1).mean(1)

    return jit_eval_step(trainer, eval_step)


def abstract_train_step(config, devices=None):
    """(train_step, abstract state, abstract batch) of `config` on `devices` (by default jax's):
    the step `vmp train` jits, traced on shapes only (nothing allocated), for compiling it
    ahead of time (`vmp compile train --target h100`, `vmp bench-compile`); the schedule is a
    constant."""
    trainer = Trainer.from_config(config, devices=devices)
    if config.model.get("task", "classify") == "ava":
        train_step = detection_steps.make_train_step(
            trainer, accum_steps=config.optim.accum_steps, schedule=lambda step: 0.0
        )
    else:
        train_step = make_train_step(
            trainer,
            accum_steps=config.optim.accum_steps,
            schedule=lambda step: 0.0,
            mixing=Mixing.from_config(config),
            augment=DeviceAugment.for_config(config),
        )
    data = sharding.batch_sharding(trainer.mesh)
    shapes = batch_shapes(config)
    abstract_batch = {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=data) for k, (shape, dtype) in shapes.items()
    }
    return train_step, trainer.abstract_placed(), abstract_batch


def batch_shapes(config) -> dict:
    """{key: (shape, dtype)} of a global training batch: video float32 (B, T, S, S, 3) and
    label int32 (B,); with data.augment_on=device, video uint8 (B, T, Hc, Wc, 3) on the canvas
    and the crop plans (`resample.crop_plan`). An AVA config: `detection_steps.batch_shapes`."""
    d, b = config.data, config.data.batch_size
    if config.model.get("task", "classify") == "ava":  # boxes instead of labels
        return detection_steps.batch_shapes(config)
    shapes = {"label": ((b,), jnp.int32)}
    if d.augment_on != "device":
        video = (b, d.num_frames, d.img_size, d.img_size, config.model.channels)
        return shapes | {"video": (video, jnp.float32)}
    canvas = resample.canvas_of(d)  # data.canvas None: the default
    plans = resample.plan_shapes(d.img_size, canvas)
    return shapes | {
        "video": ((b, d.num_frames, *canvas, config.model.channels), jnp.uint8),
        **{key: ((b, *shape), jnp.int32) for key, shape in plans.items()},
    }
