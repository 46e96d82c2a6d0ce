"""How many blocks of a kernel an SM holds at once, and how many waves a grid takes.

CUDA's rules for sm_80 and sm_90 (NVIDIA's occupancy calculator): registers are allocated per
warp in units of 256, shared memory per block with 1 KiB reserved by the system, and an SM
holds at most `max_threads_per_sm` threads and `max_blocks_per_sm` blocks. The fewest blocks
any of these allows is the number resident; occupancy is their warps over the SM's maximum.
"""

import dataclasses
import math

from vmp_jax.compile.gpu.targets import Target

REGISTER_UNIT = 256  # registers are allocated per warp in multiples of this
RESERVED_SHARED_PER_BLOCK = 1024  # bytes the system takes per block (sm_80 and later)


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    limited_by: str  # "registers", "shared memory", "threads" or "blocks"
    occupancy: float  # resident warps / the SM's maximum warps
    waves: float  # grid blocks / (blocks per SM x SMs)
    last_wave_fill: float  # how full the last wave is, in (0, 1]


def occupancy(target: Target, *, registers: int, shared_bytes: int, threads: int, grid: int):
    """The occupancy of a kernel using `registers` per thread and `shared_bytes` per block,
    launched as `grid` blocks of `threads` threads on `target`."""
    warps = math.ceil(threads / target.threads_per_warp)
    per_warp = math.ceil(registers * target.threads_per_warp / REGISTER_UNIT) * REGISTER_UNIT
    limits = {
        "registers": (target.registers_per_sm // per_warp) // warps if registers else 1 << 30,
        "shared memory": target.shared_memory_per_sm // (shared_bytes + RESERVED_SHARED_PER_BLOCK),
        "threads": target.max_threads_per_sm // (warps * target.threads_per_warp),
        "blocks": target.max_blocks_per_sm,
    }
    limited_by = min(limits, key=limits.get)
    blocks = limits[limited_by]
    if blocks == 0:
        return Occupancy(0, limited_by, 0.0, math.inf, 0.0)
    per_wave = blocks * target.sms
    waves = grid / per_wave
    last = grid - (math.ceil(waves) - 1) * per_wave
    return Occupancy(
        blocks, limited_by, blocks * warps / target.max_warps_per_sm, waves, last / per_wave
    )
