"""One train step on a mesh of 8 fake CPU devices (data=2 x fsdp=4, and data=8) gives the same
loss and parameters as on one device, with mixup or cutmix, and with the device augmentation,
over the global batch; FSDP really splits the parameters."""

import jax
import ml_collections
import numpy as np
import pytest

from vmp_jax.data import resample, transforms
from vmp_jax.data.device_augment import DeviceAugment
from vmp_jax.engine import optim, sharding, steps
from vmp_jax.engine.mixing import Mixing
from vmp_jax.engine.state import Trainer
from vmp_jax.experiment import REPO_ROOT, load_config, model_config

SMALL = [
    "model.depth=2",
    "model.embed_dim=32",
    "model.d_state=4",
    "model.dt_rank=2",
    "model.num_frames=2",
    "data.num_frames=2",
    "model.img_size=32",
    "data.img_size=32",
    "data.short_side=32",
    "optim.ema_decay=0.5",
]


# The demo trains without mixing: these turn it on, one kind each (data.mixup and data.cutmix
# both on pick one per step).
MIXUP = ["data.mixup=0.8", "data.cutmix=0.0"]
CUTMIX = ["data.mixup=0.0", "data.cutmix=1.0"]
# uint8 frames on a canvas, cropped, resized, flipped, RandAugmented, normalised and erased in
# the step (data.augment_on).
ON_DEVICE = ["data.augment_on=device", "data.canvas=(40, 48)", "data.flip=True"]
ON_DEVICE += ["data.randaug_n=2", "data.erase_prob=0.5"]


def _run(mesh_shape, devices, batch, accum_steps=1, mixing=()):
    config = load_config(REPO_ROOT / "configs" / "demo.py", [*SMALL, *mixing])
    mesh = sharding.make_mesh(ml_collections.ConfigDict(mesh_shape), devices)
    trainer = Trainer(model_config(config), optim.make_optimizer(config, 4), mesh, ema_decay=0.5)
    state = trainer.init()
    train_step = steps.make_train_step(
        trainer,
        accum_steps=accum_steps,
        schedule=optim.schedule(config, 4),
        mixing=Mixing.from_config(config),  # over the global batch
        augment=DeviceAugment.for_config(config),
    )
    batch = {k: v for k, v in batch.items() if k != "boxes"}
    placed = jax.device_put(batch, sharding.batch_sharding(mesh))
    for _ in range(2):
        state, metrics = train_step(state, placed)
    return trainer, state, {k: float(v) for k, v in metrics.items()}


def _batch(seed=0, b=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, b).astype(np.int32)
    if dtype == np.uint8:  # frames on a (40, 48) canvas and random crop boxes
        video = rng.integers(0, 256, (b, 2, 40, 48, 3), np.uint8)
        boxes = [(*rng.integers(0, 8, 2), *rng.integers(20, 33, 2)) for _ in range(b)]
        plans = [resample.crop_plan(box, 32, (40, 48)) for box in boxes]
        stacked = {k: np.stack([p[k] for p in plans]) for k in resample.PLAN_KEYS}
        return {"video": video, "label": label, "boxes": boxes} | stacked
    return {
        "video": rng.standard_normal((b, 2, 32, 32, 3)).astype(np.float32),
        "label": label,
    }


def _floats(state):
    leaves = jax.tree.leaves(state)
    return [
        np.asarray(x) for x in leaves if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    ]


@pytest.mark.parametrize(
    ("mesh_shape", "mixing"),
    [
        (dict(data=2, fsdp=4), MIXUP),
        (dict(data=8, fsdp=1), [*ON_DEVICE, *CUTMIX]),
    ],
    ids=["data2-fsdp4-mixup", "data8-augment-on-device-cutmix"],
)
def test_sharded_step_equals_one_device(mesh_shape, mixing):
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 fake CPU devices"
    batch = _batch(dtype=np.uint8 if ON_DEVICE[0] in mixing else np.float32)
    _, one_state, one = _run(dict(data=1, fsdp=1), jax.devices()[:1], batch, mixing=mixing)
    trainer, state, many = _run(mesh_shape, jax.devices(), batch, mixing=mixing)
    for key in ("loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(many[key], one[key], rtol=1e-5)
    for a, b in zip(_floats(state), _floats(one_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    if mesh_shape["fsdp"] > 1:  # the embedding dim of in_proj is split over fsdp
        kernel = trainer.parts(state).model.layers[0].mixer.in_proj.kernel[...]
        assert kernel.addressable_shards[0].data.shape == (32 // 4, kernel.shape[1])


def test_a_step_augmenting_on_the_device_without_draws_equals_the_hosts_normalisation():
    """Canvases cropped, resized and normalised in the step (no flip, RandAugment or erasing
    drawn) train as the same crops resized and normalised on the host: the device path changes
    where, not what (the resize as `resample.resize`, Pillow's arithmetic)."""
    batch = _batch(2, dtype=np.uint8)
    plain = ["data.flip=False", "data.randaug_n=0", "data.erase_prob=0.0", "data.canvas=(40, 48)"]
    plain += MIXUP
    crops = [
        resample.resize(clip[:, t : t + h, l : l + w], 32, 32)
        for clip, (t, l, h, w) in zip(batch["video"], batch["boxes"], strict=True)
    ]
    host = {"video": transforms.normalize(np.stack(crops)), "label": batch["label"]}
    _, a, ma = _run(dict(data=1, fsdp=1), jax.devices()[:1], host, 1, plain)
    on_device = [*plain, "data.augment_on=device"]
    _, b, mb = _run(dict(data=1, fsdp=1), jax.devices()[:1], batch, 1, on_device)
    np.testing.assert_allclose(mb["loss"], ma["loss"], rtol=1e-6)
    for x, y in zip(_floats(a), _floats(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_accumulated_gradients_equal_one_big_batch():
    """Mixing is over the global batch, before it is cut into micro-batches."""
    batch = _batch(1)
    _, a, ma = _run(dict(data=1, fsdp=1), jax.devices()[:1], batch, 1, MIXUP)
    _, b, mb = _run(dict(data=1, fsdp=1), jax.devices()[:1], batch, 4, MIXUP)
    np.testing.assert_allclose(mb["loss"], ma["loss"], rtol=1e-5)
    for x, y in zip(_floats(a), _floats(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)


def test_bad_mesh_is_named():
    with pytest.raises(ValueError, match="mesh.data x mesh.fsdp = 3 x 2 must equal the 8"):
        sharding.make_mesh(ml_collections.ConfigDict(dict(data=3, fsdp=2)))
    with pytest.raises(ValueError, match="mesh.fsdp=3 does not divide the 8 devices"):
        sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=3)))
