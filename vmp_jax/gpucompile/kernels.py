"""`vmp gpu-compile kernels`: the Pallas selective-scan kernels compiled for a GPU target.

The kernels of a training step, forward and backward (with their segments' summary kernels,
where the sequence is split), and the inference forward that `vmp eval` and `vmp predict` run
(it saves no chunk states: a kernel of its own) are compiled at one scan shape with VMP's
backward-scan
options (reverse, masked diagonal, residual SSM, D skip and silu(z) gate; bf16 u, B, C and z,
float32 delta, A and D), and reported per kernel: registers per thread, spill bytes, shared
memory per block, grid and threads (what XLA launches), blocks resident per SM and what limits
them, occupancy and waves.
"""

import dataclasses

from vmp_jax.gpucompile import occupancy, targets, toolchain

# The shape the kernels are tuned at: VMP-S's scan at 8 frames, batch 16 (b, L, D, N).
TARGET_SHAPE = (16, 1569, 768, 16)
# Every kernel a training step's scan launches, in launch order, then the inference forward;
# the summaries only when the sequence is split into segments (pallas_kernels/segments.py).
KERNELS = {
    "selective_scan_fwd_summary": "forward summary",
    "selective_scan_fwd": "forward",
    "selective_scan_bwd_summary": "backward summary",
    "selective_scan_bwd": "backward",
    "selective_scan_fwd_inference_summary": "inference forward summary",
    "selective_scan_fwd_inference": "inference forward",
}
REQUIRED = ("selective_scan_fwd", "selective_scan_bwd", "selective_scan_fwd_inference")


@dataclasses.dataclass(frozen=True)
class KernelFigures:
    name: str
    pass_: str  # KERNELS' values: "forward", "backward", "inference forward", ...
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_memory_bytes: int
    grid: tuple[int, ...]
    threads: int
    blocks_per_sm: int
    limited_by: str
    occupancy: float
    waves: float
    last_wave_fill: float

    def as_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["pass"] = out.pop("pass_")
        out["grid"] = list(self.grid)
        return out


def check_shape(shape) -> tuple[int, int, int, int]:
    """(b, L, D, N), each >= 1; ValueError naming the bad one."""
    if len(shape) != 4:
        raise ValueError(f"a scan shape is (batch, length, dim, state), got {tuple(shape)}")
    for name, value in zip(("batch", "length", "dim", "state"), shape, strict=True):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    return tuple(int(x) for x in shape)


def compile_kernels(target_name: str, shape, blocks, variant: str = "sequential"):
    """(KernelFigures of every kernel launched, in KERNELS' order, and the ptxas used)."""
    from vmp_jax.ssm import VARIANTS, ScanBlocks

    target = targets.get(target_name)
    shape = check_shape(shape)
    blocks = (blocks if isinstance(blocks, ScanBlocks) else ScanBlocks(*blocks)).validate("pallas")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    task = {
        "kind": "kernels",
        "target": target_name,
        "shape": list(shape),
        "blocks": list(blocks.as_tuple()),
        "variant": variant,
    }
    result = toolchain.run_worker(task, dump=True)
    missing = [k for k in REQUIRED if k not in result.kernels]
    if missing:
        raise RuntimeError(f"ptxas reported no figures for {missing} (was ptxas run?)")
    figures = [_figures(target, result.kernels[k]) for k in KERNELS if k in result.kernels]
    return figures, result.ptxas


def _figures(target: targets.Target, report: toolchain.KernelReport) -> KernelFigures:
    threads = report.threads[0] * report.threads[1] * report.threads[2]
    grid = report.grid[0] * report.grid[1] * report.grid[2]
    shared = report.static_shared_bytes + (report.shared_bytes or 0)
    occ = occupancy.occupancy(
        target, registers=report.registers, shared_bytes=shared, threads=threads, grid=grid
    )
    return KernelFigures(
        report.name,
        KERNELS[report.name],
        report.registers,
        report.spill_store_bytes,
        report.spill_load_bytes,
        shared,
        report.grid,
        threads,
        occ.blocks_per_sm,
        occ.limited_by,
        occ.occupancy,
        occ.waves,
        occ.last_wave_fill,
    )


def format_table(target_name: str, shape, blocks, variant, figures, ptxas: str) -> str:
    target = targets.get(target_name)
    b, L, d, n = shape
    head = (
        f"{target.name} ({target.arch}, {target.sms} SMs): selective scan b={b} L={L} D={d} "
        f"N={n}, blocks {blocks.as_tuple()}, {variant}; ptxas {ptxas}"
    )
    rows = [
        "| kernel | registers | spill st/ld B | smem B | grid | threads | blocks/SM | "
        "occupancy | waves | last wave |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        rows.append(
            f"| {f.pass_} | {f.registers} | {f.spill_store_bytes}/{f.spill_load_bytes} | "
            f"{f.shared_memory_bytes} | {'x'.join(map(str, f.grid))} | {f.threads} | "
            f"{f.blocks_per_sm} ({f.limited_by}) | {f.occupancy:.3f} | {f.waves:.2f} | "
            f"{f.last_wave_fill:.0%} |"
        )
    return "\n".join([head, *rows])
