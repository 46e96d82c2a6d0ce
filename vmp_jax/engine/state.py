"""The train state: model, optimiser (and optional EMA copy of the model) as one nnx.State,
created from its abstract shape and placed on the mesh by a jitted init.

    trainer = Trainer(model_config, optimizer, mesh, seed=0, ema_decay=0.0)
    state = trainer.init()              # sharded by the parameters' logical axes
    model = trainer.model(state)        # an nnx model to call (eval mode)

The model's RNG streams (drop path, dropout) are part of the state, so a restored checkpoint
continues with exactly the random draws an uninterrupted run would make.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vmp_jax.engine import sharding
from vmp_jax.models import layers
from vmp_jax.models.config import ModelConfig
from vmp_jax.models.detection import model_class
from vmp_jax.models.videomamba import VideoMamba


def flat_params(model: VideoMamba) -> dict[tuple, jax.Array]:
    """{path: array} of a model's parameters in the per-block layout (paths as
    nnx.to_flat_state gives them for scan_layers=False), whichever layout the model has."""
    flat = {path: v[...] for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    return layers.unstack(flat, model.cfg.depth) if model.cfg.scan_layers else flat


def set_params(model: VideoMamba, params: dict) -> None:
    """Overwrites every parameter of `model` from {path: array} in the per-block layout
    (stacked here when the model scans its layers); KeyError naming one that is missing."""
    if model.cfg.scan_layers:
        params = layers.stack(params, model.cfg.depth, xp=jnp)
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    nnx.update(model, nnx.from_flat_state({p: v.replace(jnp.asarray(params[p])) for p, v in flat}))


def model_with_params(cfg: ModelConfig, params: dict, *, seed: int = 0) -> VideoMamba:
    """The model `VideoMamba(cfg, rngs=nnx.Rngs(seed))` builds (the detector for
    cfg.task="ava"), holding `params` ({path: array},
    per-block layout) in place of initial weights, which are never drawn: the structure comes
    from `nnx.eval_shape`, and only the RNG streams (drop path, dropout) are computed, by a
    program from which XLA drops every initialiser. An eager initialisation compiles and runs
    each initialiser only for its weights to be overwritten (seconds, at every `vmp predict`)."""
    build = lambda: model_class(cfg)(cfg, rngs=nnx.Rngs(seed))  # noqa: E731
    model = nnx.eval_shape(build)
    nnx.update(model, nnx.jit(lambda: nnx.state(build(), nnx.RngState))())
    set_params(model, params)
    return model


class Parts(nnx.Module):
    """What the state holds; `ema` is None without EMA."""

    def __init__(self, model: VideoMamba, optimizer: nnx.Optimizer, ema: VideoMamba | None):
        self.model, self.optimizer, self.ema = model, optimizer, ema


class Trainer:
    """Graph definitions and shardings of the train state on one mesh."""

    def __init__(
        self,
        cfg: ModelConfig,
        tx: optax.GradientTransformation,
        mesh,
        *,
        seed: int = 0,
        ema_decay: float = 0.0,
    ):
        self.cfg, self.tx, self.mesh, self.seed = cfg, tx, mesh, seed
        self.ema_decay = ema_decay
        abstract = nnx.eval_shape(self._build)
        abstract.model.train()
        self.train_def, abstract_state = nnx.split(abstract)
        abstract.model.eval()
        if abstract.ema is not None:
            abstract.ema.eval()
        self.eval_def = nnx.graphdef(abstract)
        self.abstract_state = abstract_state
        self.shardings = sharding.state_shardings(abstract_state, mesh)

    @classmethod
    def from_config(cls, config, *, steps_per_epoch: int = 1, devices=None) -> "Trainer":
        """The Trainer of an experiment config on its mesh (the optimiser's state layout does
        not depend on the schedule's length, so steps_per_epoch only matters for training)."""
        from vmp_jax.engine import optim
        from vmp_jax.experiment import model_config

        return cls(
            model_config(config),
            optim.make_optimizer(config, steps_per_epoch),
            sharding.make_mesh(config.mesh, devices),
            seed=config.seed,
            ema_decay=config.optim.ema_decay,
        )

    def _build(self) -> Parts:
        rngs = nnx.Rngs(params=self.seed, dropout=self.seed + 1)
        model = model_class(self.cfg)(self.cfg, rngs=rngs)  # the detector for task "ava"
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        ema = nnx.clone(model) if self.ema_decay > 0 else None
        return Parts(model, optimizer, ema)

    def init(self) -> nnx.State:
        """The initial state, created directly in its shards."""
        return jax.jit(lambda: nnx.state(self._build()), out_shardings=self.shardings)()

    def with_params(self, state: nnx.State, params: dict) -> nnx.State:
        """`state` with the model's (and the EMA copy's) weights replaced by {path: array},
        placed on the mesh; optimiser state and RNG streams unchanged."""
        parts = self.parts(state, train=True)
        for model in (parts.model, parts.ema):
            if model is not None:
                set_params(model, params)
        return jax.device_put(nnx.state(parts), self.shardings)

    def abstract_placed(self):
        """The state's shapes, dtypes and shardings (the target of a checkpoint restore)."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state,
            self.shardings,
        )

    def parts(self, state: nnx.State, *, train: bool = False) -> Parts:
        return nnx.merge(self.train_def if train else self.eval_def, state)

    def model(self, state: nnx.State, *, ema: bool = False) -> VideoMamba:
        """The model to evaluate (eval mode): the EMA copy when asked and present."""
        parts = self.parts(state)
        return parts.ema if ema and parts.ema is not None else parts.model
