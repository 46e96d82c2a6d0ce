"""Initialisers of SPEC section 5 (Mamba's for the SSM, VideoMamba's for the rest), each with
the parameter's logical axis names (see `config`)."""

import math

import jax
import jax.numpy as jnp
from flax import nnx


def trunc_normal_std(std: float):
    """Normal(0, std) truncated at +-2 std (keywords: the second positional is the dtype)."""
    return nnx.initializers.truncated_normal(stddev=std, lower=-2.0, upper=2.0)


trunc_normal = trunc_normal_std(0.02)
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def uniform(bound: float):
    """U(-bound, bound): PyTorch's default for conv weights and biases (bound 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def a_log(key, shape, dtype=jnp.float32):
    """S4D-real: A = -(1..N) for every channel, stored as log: (d, n)."""
    del key
    return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=dtype)), shape)


def dt_bias(dt_min=1e-3, dt_max=1e-1, floor=1e-4):
    """Inverse softplus of a step drawn log-uniformly in [dt_min, dt_max], floored (Mamba)."""

    def init(key, shape, dtype=jnp.float32):
        log_dt = jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))
        dt = jnp.maximum(jnp.exp(log_dt), floor)
        return dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)

    return init


def with_axes(init, *axes: str):
    """Attach logical axis names as metadata. They are not applied when the parameter is
    created (no eager sharding): the trainer maps them to mesh axes and places the state."""
    return nnx.with_partitioning(init, axes, eager_sharding=False)


def param(init, rngs: nnx.Rngs, shape, *axes: str) -> nnx.Param:
    """A float32 parameter initialised by `init`, with logical axis names."""
    value = init(rngs.params(), shape, jnp.float32)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)
