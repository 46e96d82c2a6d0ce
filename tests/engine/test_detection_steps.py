"""The AVA detector's steps: the loss over the valid boxes only, a train step that learns and
keeps its state on a non-finite batch, the eval step's sigmoid x person score, and the
abstract step `vmp compile train` and `vmp bench-train` build for an AVA config."""

import jax
import numpy as np
import optax
import pytest

from vmp_jax.engine import detection_steps, sharding, steps
from vmp_jax.engine.state import Trainer
from vmp_jax.experiment import REPO_ROOT, load_config

TINY = [
    "model.num_frames=2", "model.img_size=32", "model.embed_dim=16", "model.depth=2",
    "model.d_state=4", "model.dt_rank=2", "data.batch_size=8", "ava.max_boxes=3",
    "eval.batch_size=8", "optim.warmup_epochs=0",
]  # fmt: skip


def _config(*overrides):
    return load_config(REPO_ROOT / "configs" / "ava_demo.py", [*TINY, *overrides])


def _batch(config, rng) -> dict:
    """A host batch of TRAIN_KEYS (+ person_scores): random clips and boxes, 1..K valid."""
    shapes = detection_steps.batch_shapes(config)
    b, k = shapes["box_mask"][0]
    s = config.data.img_size
    corner = rng.uniform(0, s / 2, (b, k, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, s / 2, (b, k, 2))], -1)
    mask = np.arange(k) < rng.integers(1, k + 1, (b, 1))
    labels = (rng.random(shapes["labels"][0]) < 0.3) * mask[..., None]
    return {
        "video": rng.normal(size=shapes["video"][0]).astype(np.float32),
        "boxes": boxes.astype(np.float32),
        "box_mask": mask,
        "labels": labels.astype(np.float32),
        "person_scores": rng.uniform(0.5, 1, (b, k)).astype(np.float32),
    }


def test_the_loss_is_the_mean_bce_of_the_valid_boxes_alone(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
    labels = (rng.random((2, 4, 6)) < 0.4).astype(np.float32)
    mask = np.array([[True, True, False, False], [True, False, False, False]])
    loss, correct, pairs = detection_steps.box_loss(logits, labels, mask)
    want = optax.sigmoid_binary_cross_entropy(logits[mask], labels[mask]).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert float(pairs) == 3 * 6
    assert float(correct) == np.sum((logits[mask] > 0) == (labels[mask] > 0.5))
    flipped = np.where(mask[..., None], labels, 1 - labels)  # padding boxes' labels changed
    assert float(detection_steps.box_loss(logits, flipped, mask)[0]) == float(loss)


def test_train_step_learns_keeps_its_state_on_nan_and_eval_scores_boxes(seed):
    config = _config("optim.base_lr=1e-2")  # peak 5e-3 at this batch, no warm-up
    trainer = Trainer.from_config(config, steps_per_epoch=10)
    step = detection_steps.make_train_step(trainer, accum_steps=1, schedule=lambda _: 1e-3)
    eval_step = detection_steps.make_eval_step(trainer)
    batch = _batch(config, np.random.default_rng(seed))
    data = sharding.batch_sharding(trainer.mesh)
    put = lambda b, keys: {  # noqa: E731
        k: jax.make_array_from_process_local_data(data, b[k]) for k in keys
    }
    state = trainer.init()
    losses = []
    for _ in range(6):
        state, metrics = step(state, put(batch, detection_steps.TRAIN_KEYS))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] * 0.9, losses
    before = jax.tree.map(np.asarray, trainer.parts(state).model.head.kernel[...])
    broken = batch | {"video": np.full_like(batch["video"], np.nan)}
    state, metrics = step(state, put(broken, detection_steps.TRAIN_KEYS))
    assert int(metrics["nonfinite"]) == 1
    np.testing.assert_array_equal(np.asarray(trainer.parts(state).model.head.kernel[...]), before)
    scores = np.asarray(eval_step(state, put(batch, detection_steps.EVAL_KEYS)))
    logits = trainer.model(state)(batch["video"], batch["boxes"])
    want = jax.nn.sigmoid(np.asarray(logits)) * batch["person_scores"][..., None]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)


def test_an_ava_config_gives_the_detectors_abstract_step():
    config = _config()
    train_step, state, batch = steps.abstract_train_step(config)
    assert sorted(batch) == sorted(detection_steps.TRAIN_KEYS)
    assert batch["boxes"].shape == (8, 3, 4) and batch["labels"].shape == (8, 3, 80)
    lowered = train_step.lower(state, batch)  # traced with the AVA batch: no label key
    assert "loss" in str(lowered.out_info[1])
