"""The XLA flags every `vmp` command runs with, in one place: `vmp train` (and every other
command) applies them before jax starts, and `vmp compile` compiles with the same ones.

--xla_gpu_enable_triton_gemm=false: matrix products go to cuBLAS instead of Triton GEMM
fusions. Compiled without a device (`vmp compile`), XLA cannot autotune, and its GEMM
fusion autotuner then offers one default tiling (`GemmFusionAutotunerImpl::GenerateConfigs`:
`!IsAutotuningEnabled() ? std::vector(1, kDefaultGemmTiling)`) instead of a list from which
tilings that fail `FindBlockLevelParameters` are dropped; for the float32 dt_proj product,
whose contracting size is dt_rank (6 in the demo, 12 in Ti), that one tiling has no valid
output tiles and the compile stops with "Couldn't find output tile sizes that satisfy hlo".
With cuBLAS for every product the compile needs no autotuning, and a GPU run computes what
the static figures describe.
"""

import os

FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def with_flags(existing: str) -> str:
    """`existing` XLA_FLAGS plus ours, a flag the user set themselves left as they set it."""
    names = {f.split("=")[0] for f in existing.split()}
    return " ".join([*existing.split(), *(f for f in FLAGS if f.split("=")[0] not in names)])


def apply() -> None:
    """Adds the flags to XLA_FLAGS (read when jax's backends start: call before any jax work)."""
    os.environ["XLA_FLAGS"] = with_flags(os.environ.get("XLA_FLAGS", ""))
