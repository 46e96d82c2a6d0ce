"""In the compile worker (`vmp_jax.compile.worker`), what is particular to TPU targets: the
compile-only devices of a topology (libtpu lays them out; a multi-host topology gives the
multi-process program), the scope a program is traced in (the TPU kernels, lowered to Mosaic),
and each device's HBM and VMEM from jax's own table of TPU chips."""

from vmp_jax.compile.tpu import targets
from vmp_jax.ssm.api import compiling_for

KERNEL_CALL = "tpu_custom_call"  # how a Mosaic kernel appears in lowered HLO
PLACE_FLAG = "--topology"


def devices(target: str, place: str | None) -> list:
    """The compile-only devices of topology `place` (default: one host of `target`)."""
    from jax.experimental import topologies

    name = place or targets.get(target).host_topology
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)


def tracing(target: str):
    return compiling_for("tpu")


def describe(devices: list, target: str) -> dict:
    """The devices, and each one's HBM and VMEM (jax's own table of TPU chips: per TensorCore,
    times the cores a device spans)."""
    from jax.experimental.pallas import tpu as pltpu

    first = devices[0]
    cores = getattr(first, "num_cores", 1)
    chip = getattr(pltpu.ChipVersion, targets.get(target).chip)
    info = pltpu.get_tpu_info_for_chip(chip, cores)
    return {
        "device_kind": first.device_kind,
        "devices": len(devices),
        "chips": len({tuple(d.coords) for d in devices}),
        "hosts": len({d.process_index for d in devices}),
        "hbm_bytes_per_device": int(info.hbm_capacity_bytes * cores),
        "vmem_bytes_per_core": int(info.vmem_capacity_bytes),
    }
