"""Every target `vmp compile` knows, by the name the CLI takes, and its family: "gpu" (h100,
a100: `gpu/targets.py`) or "tpu" (v4, v5e, v5p, v6e: `tpu/targets.py`). The family says which
toolchain compiles for it and how its devices are made."""

from vmp_jax.compile.gpu import targets as gpu
from vmp_jax.compile.tpu import targets as tpu

FAMILIES = {"gpu": tuple(gpu.TARGETS), "tpu": tuple(tpu.TARGETS)}
NAMES = (*sorted(gpu.TARGETS), *tpu.TARGETS)


def family(name: str) -> str:
    """ "gpu" or "tpu"; ValueError listing the known targets otherwise."""
    for kind, names in FAMILIES.items():
        if name in names:
            return kind
    raise ValueError(f"unknown target {name!r}; known targets: {', '.join(NAMES)}")


def get(name: str):
    """The target called `name`: a gpu.targets.Target or a tpu.targets.TpuTarget."""
    return (gpu if family(name) == "gpu" else tpu).get(name)
