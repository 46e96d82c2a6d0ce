"""`vmp compile kernels --target h100|a100`: the Pallas selective-scan kernels compiled for a GPU.

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
import tempfile

from vmp_jax.compile import programs, toolchain
from vmp_jax.compile.gpu import occupancy, ptxas, targets

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


def compile_kernels(target_name: str, shape, blocks, variant: str = "sequential"):
    """(KernelFigures of every kernel launched, in KERNELS' order, and the ptxas used)."""
    from vmp_jax.ssm import ScanBlocks

    target = targets.get(target_name)
    shape = programs.check_scan(shape, variant)
    blocks = (blocks if isinstance(blocks, ScanBlocks) else ScanBlocks(*blocks)).validate("pallas")
    task = programs.kernels_task(target_name, shape, blocks, variant)
    with tempfile.TemporaryDirectory(prefix="vmp-compile-dump-") as dump:
        result, log = toolchain.run_worker(task, dump_to=dump)
        kernels = ptxas.kernel_reports(log, dump)
    if not result["compiled"]:
        raise RuntimeError(f"the kernels do not compile for {target_name}: {result['error']}")
    missing = [k for k in REQUIRED if k not in kernels]
    if missing:
        raise RuntimeError(f"ptxas reported no figures for {missing} (was ptxas run?)")
    figures = [_figures(target, kernels[k]) for k in KERNELS if k in kernels]
    return figures, ptxas.ptxas_version(log)


def _figures(target: targets.Target, report: ptxas.KernelReport) -> KernelFigures:
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
