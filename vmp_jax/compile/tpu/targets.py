"""The TPU targets `vmp compile` knows: each one's compile-only topology of one host and its
chip in jax's table of TPU chips (`pltpu.get_tpu_info_for_chip`: HBM and VMEM per core)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TpuTarget:
    key: str  # as the CLI takes it: "v5e"
    name: str  # the device kind jax reports: "TPU v5 lite"
    host_topology: str  # one host's chips, the default --topology
    chip: str  # its pltpu.ChipVersion member


TARGETS = {
    t.key: t
    for t in (
        TpuTarget("v4", "TPU v4", "v4:2x2x1", "TPU_V4"),
        TpuTarget("v5e", "TPU v5 lite", "v5e:2x2", "TPU_V5E"),
        TpuTarget("v5p", "TPU v5", "v5p:2x2x1", "TPU_V5P"),
        TpuTarget("v6e", "TPU v6 lite", "v6e:2x2", "TPU_V6E"),
    )
}
# Topologies a user may give, by target: chips per dimension, in whole hosts (2x2x1 chips on
# every target here); more hosts make a multi-host (multi-process) program.
EXAMPLE_TOPOLOGIES = {
    "v4": ("v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:4x4x4"),
    "v5e": ("v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:8x8", "v5e:16x16"),
    "v5p": ("v5p:2x2x1", "v5p:2x2x2", "v5p:2x4x4", "v5p:4x4x4"),
    "v6e": ("v6e:2x2", "v6e:2x4", "v6e:4x4", "v6e:8x8", "v6e:16x16"),
}


def get(key: str) -> TpuTarget:
    try:
        return TARGETS[key]
    except KeyError:
        raise ValueError(f"unknown TPU target {key!r}; valid: {', '.join(TARGETS)}") from None


def check_topology(target: TpuTarget, topology: str) -> str:
    """`topology` if it names chips of `target` ("v5e:4x4"); ValueError listing valid ones."""
    prefix, _, shape = topology.partition(":")
    dims = shape.split("x")
    if prefix != target.key or not all(d.isdigit() and int(d) > 0 for d in dims) or not shape:
        examples = ", ".join(EXAMPLE_TOPOLOGIES[target.key])
        raise ValueError(
            f"--topology {topology!r} is not a {target.key} topology; valid ones look like "
            f"{examples} (chips per dimension, whole hosts of 2x2 chips)"
        )
    return topology


def table_topologies(key: str, hosts: int) -> list[str]:
    """The topologies `vmp compile table` compiles for: one host of `key`, and `hosts` hosts
    (a power of two; v5e/v6e hosts hold 2x2 chips and tile a square-ish grid, v4/v5p hosts
    hold 2x2x1 and stack along z)."""
    target = get(key)
    if hosts < 1 or hosts & (hosts - 1):
        raise ValueError(f"--hosts must be a power of two, got {hosts}")
    if hosts == 1:
        return [target.host_topology]
    if target.host_topology.count("x") == 2:  # v4, v5p: 2x2x1 chips per host
        return [target.host_topology, f"{key}:2x2x{hosts}"]
    k = hosts.bit_length() - 1
    wide, tall = 2 ** ((k + 1) // 2), 2 ** (k // 2)
    return [target.host_topology, f"{key}:{2 * tall}x{2 * wide}"]
