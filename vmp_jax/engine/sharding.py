"""The device mesh and the logical-axis rules that place the train state on it.

The mesh has two axes: `data` (batch only) and `fsdp` (batch and the parameters' `embed`
dimension, so that parameters and optimiser moments are split over it, ZeRO-3 style). Every
parameter carries logical axis names (vmp_jax.models.init); RULES maps them to mesh axes, and
names without a rule are replicated.
"""

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
BATCH = ("data", "fsdp")
RULES = (("batch", BATCH), ("embed", "fsdp"))


def make_mesh(mesh_config, devices=None) -> Mesh:
    """A (data, fsdp) mesh over `devices` (all by default); data = -1 takes what fsdp leaves."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    data, fsdp = mesh_config.data, mesh_config.fsdp
    if fsdp < 1 or (data != -1 and data < 1):
        raise ValueError(f"mesh.data must be -1 or >= 1 and mesh.fsdp >= 1, got {data}, {fsdp}")
    if data == -1:
        if devices.size % fsdp:
            raise ValueError(f"mesh.fsdp={fsdp} does not divide the {devices.size} devices")
        data = devices.size // fsdp
    if data * fsdp != devices.size:
        raise ValueError(
            f"mesh.data x mesh.fsdp = {data} x {fsdp} must equal the {devices.size} devices"
        )
    return Mesh(devices.reshape(data, fsdp), AXES)


def per_device(batch_size: int, key: str, devices: int) -> int:
    """A device's share of a global batch; ValueError naming the config key when it does not
    split evenly (XLA's own error for an uneven batch sharding names neither)."""
    if batch_size % devices:
        raise ValueError(
            f"{key} ({batch_size}) does not split over {devices} devices: make it a multiple "
            f"of {devices}"
        )
    return batch_size // devices


def state_shardings(abstract_state, mesh: Mesh):
    """NamedShardings for a state whose Variables carry logical axis names."""
    from flax import nnx

    specs = nnx.get_partition_spec(abstract_state)
    return nn.logical_to_mesh_sharding(specs, mesh, RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
