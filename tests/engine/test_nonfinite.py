"""A train step whose loss, gradients or updated weights are not finite changes nothing of the
state: weights, optimiser moments and step, EMA and RNG counts come back bit for bit."""

import jax
import ml_collections
import numpy as np
import pytest

from tests.tiny_run import as_numpy
from vmp_jax.engine import optim, sharding, steps
from vmp_jax.engine.mixing import Mixing
from vmp_jax.engine.state import Trainer
from vmp_jax.experiment import REPO_ROOT, load_config, model_config

SMALL = [
    "model.depth=1",
    "model.embed_dim=16",
    "model.d_state=4",
    "model.dt_rank=2",
    "model.num_frames=2",
    "model.img_size=16",
    "optim.ema_decay=0.5",
    "model.drop_path_rate=0.1",  # RNG counts that a step advances
    "data.mixup=0.8",
    "data.cutmix=1.0",
]


@pytest.fixture(scope="module")
def step_and_state():
    config = load_config(REPO_ROOT / "configs" / "demo.py", SMALL)
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1)), jax.devices()[:1])
    trainer = Trainer(model_config(config), optim.make_optimizer(config, 4), mesh, ema_decay=0.5)
    train_step = steps.make_train_step(
        trainer,
        accum_steps=1,
        schedule=optim.schedule(config, 4),
        mixing=Mixing.from_config(config),
    )
    return train_step, trainer


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "video": rng.standard_normal((8, 2, 16, 16, 3)).astype(np.float32),
        "label": rng.integers(0, 4, 8).astype(np.int32),
    }


def _leaves(state) -> list[np.ndarray]:
    return [as_numpy(x).copy() for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_nonfinite_step_changes_nothing(step_and_state, bad, seed):
    train_step, trainer = step_and_state
    state, _ = train_step(trainer.init(), _batch(seed))  # moments and EMA no longer initial
    before = _leaves(state)
    batch = _batch(seed + 1)
    batch["video"][3, 1, 5, 7, 2] = bad  # one pixel of one clip
    state, metrics = train_step(state, batch)
    assert int(metrics["nonfinite"]) == 1 and not np.isfinite(float(metrics["loss"]))
    for got, want in zip(_leaves(state), before, strict=True):
        np.testing.assert_array_equal(got, want)
    state, metrics = train_step(state, _batch(seed + 2))  # and the next good step applies
    assert int(metrics["nonfinite"]) == 0 and np.isfinite(float(metrics["loss"]))
    changed = [not np.array_equal(a, b) for a, b in zip(_leaves(state), before, strict=True)]
    assert sum(changed) > len(changed) // 2


def test_finite_means_every_element():
    assert bool(steps.all_finite({"a": np.ones(3)}, np.float32(2.0)))
    assert not bool(steps.all_finite({"a": np.array([1.0, np.inf])}, np.float32(2.0)))
    assert not bool(steps.all_finite({"a": np.ones(3)}, np.float32(np.nan)))
    assert bool(steps.all_finite({"n": np.arange(3)}, np.float32(1.0)))  # integers: skipped
