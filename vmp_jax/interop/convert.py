"""`vmp export` and `vmp import`: our checkpoints to VideoMamba-named files and back.

    paths = export(config, "vmp.safetensors", checkpoint="runs/x")   # + vmp.json
    report = import_weights(config, "videomamba_t16_k400_f8_res224.pth", "runs/imported")

An imported checkpoint is a `vmp train` checkpoint at step 0 (fresh optimiser state) with the
config beside it (OUT/config.json): `vmp eval --checkpoint`, `vmp predict --checkpoint`, `vmp
export --checkpoint` and `vmp train --config.train.init_from` read it.
"""

import numpy as np
from flax import nnx

from vmp_jax import storage
from vmp_jax.data import labels
from vmp_jax.engine import checkpoint
from vmp_jax.engine.state import Trainer, flat_params
from vmp_jax.experiment import model_config, save_config
from vmp_jax.interop import released, state_dict
from vmp_jax.models.videomamba import VideoMamba, abstract_params


def model_params(config, checkpoint_path: str | None = None, *, seed: int = 0, ema=False):
    """{path: np.ndarray} of a checkpoint's model (its EMA copy with ema=True), or of a fresh
    initialisation from `seed` without a checkpoint."""
    cfg = model_config(config)
    if checkpoint_path is None:
        model = VideoMamba(cfg, rngs=nnx.Rngs(seed))
        return {k: np.asarray(v) for k, v in flat_params(model).items()}
    part = "ema" if ema else "model"
    params, _ = checkpoint.restore_params(checkpoint_path, abstract_params(cfg), part=part)
    return params


def export(config, out: str, checkpoint_path: str | None = None, *, seed=0, ema=False):
    """Writes the model's state dict in VideoMamba's names to `out` (.safetensors or .pth)
    and its config as JSON beside it; returns the paths written."""
    storage.check_access([checkpoint_path or ""], outputs=[out])
    cfg = model_config(config)
    params = model_params(config, checkpoint_path, seed=seed, ema=ema)
    return state_dict.write(state_dict.to_state_dict(params, cfg), out, cfg)


def import_weights(config, weights: str, out: str, *, head="drop", seed=0) -> released.Report:
    """Loads a VideoMamba state-dict file (released or exported) into a step-0 checkpoint of
    `config`'s model in the workdir `out`; returns what was loaded, adapted, initialised and
    dropped. Refuses a workdir that already has checkpoints."""
    storage.check_access([weights], outputs=[out])
    cfg = model_config(config)
    existing = checkpoint.checkpoint_dir(out)
    if storage.isdir(existing) and storage.listdir(existing):
        raise ValueError(f"{out} already has checkpoints; import into a new directory")
    init = state_dict.to_state_dict(model_params(config, seed=seed), cfg)
    tensors, report = released.adapt(state_dict.read(weights), cfg, init, head=head)
    params = state_dict.from_state_dict(tensors, cfg, source=weights)
    trainer = Trainer.from_config(config)
    ckpt = checkpoint.Checkpoints(out, async_save=False)
    ckpt.save(0, trainer.with_params(trainer.init(), params))
    ckpt.close()
    save_config(config, out)
    labels.save_class_names(config, out)
    return report
