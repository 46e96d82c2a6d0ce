"""The selective state-space scan of Mamba, with VideoMambaPro's masked diagonal and residual SSM.

`selective_scan` is the op, its tunables `algorithm`, `blocks` (`ScanBlocks`) and `variant`;
`similarity_matrix` gives the paper's M of one direction.
"""

from pallas_kernels.blocks import TILED, ScanBlocks
from pallas_kernels.scan_chunk import VARIANTS
from vmp_jax.ssm.api import (
    ALGORITHMS,
    AUTO_BY_BACKEND,
    AUTO_FALLBACK,
    batch_sharded,
    compiling_for,
    resolve_algorithm,
    selective_scan,
    target_backend,
)
from vmp_jax.ssm.reference import similarity_matrix, state_kernel

__all__ = [
    "ALGORITHMS",
    "AUTO_BY_BACKEND",
    "AUTO_FALLBACK",
    "TILED",
    "VARIANTS",
    "ScanBlocks",
    "batch_sharded",
    "compiling_for",
    "resolve_algorithm",
    "selective_scan",
    "similarity_matrix",
    "state_kernel",
    "target_backend",
]
