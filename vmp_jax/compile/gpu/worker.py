"""In the compile worker (`vmp_jax.compile.worker`), what is particular to GPU targets: the
compile-only devices of one host of a target, described to XLA by its `GpuTargetConfigProto`,
and the scope a program is traced in (natively, as on the GPU, with the target's SMs)."""

from vmp_jax.compile.gpu import targets
from vmp_jax.ssm.api import compiling_for

KERNEL_CALL = "__gpu$xla.gpu.triton"  # how a native Pallas kernel appears in lowered HLO
PLACE_FLAG = "--devices"


def devices(target: str, place: int | None) -> list:
    """`place` (default 1) compile-only devices of one host of `target` GPUs."""
    from jax.experimental import topologies

    text = targets.get(target).config_text()
    topology = topologies.get_topology_desc(
        platform="cuda", topology_name="", target_config=text, topology=f"1x1x{place or 1}"
    )
    return list(topology.devices)


def tracing(target: str):
    return compiling_for("gpu", targets.get(target).sms)


def describe(devices: list, target: str) -> dict:
    """The devices (one host's GPUs: a chip each)."""
    return {
        "device_kind": targets.get(target).name,
        "devices": len(devices),
        "chips": len(devices),
        "hosts": 1,
    }
