"""`vmp compile kernels --target v4|v5e|v5p|v6e`: the Pallas TPU kernels compiled by libtpu
for one compile-only chip, and what the compile says.

The TPU kernels of a training step (forward saving its chunk states, backward) and of an
inference forward at one scan shape (VMP's backward-scan options, bf16 activations), on one
chip: whether Mosaic compiled each pass (the worker's report of the compile: its error, or the
executable's memory per chip and machine code), and per kernel the VMEM its blocks take (two
buffers each, padded to the tiles, with its scratch: from its BlockSpecs) against the core's
VMEM, and its cost estimate. Static figures, not timings.
"""

from pallas_kernels.selective_scan_tpu import kernel_figures
from vmp_jax.compile import programs, toolchain
from vmp_jax.compile.tpu import targets

GIB = 2**30


def compile_kernels(target_name: str, shape, blocks, variant: str = "sequential") -> dict:
    """The kernels' figures at `shape` on one chip of `target_name`, as JSON-ready dict."""
    from pallas_kernels.selective_scan_tpu import check_blocks
    from vmp_jax.ssm import ScanBlocks

    targets.get(target_name)
    shape = programs.check_scan(shape, variant)
    blocks = blocks if isinstance(blocks, ScanBlocks) else ScanBlocks(*blocks)
    check_blocks(blocks)
    task = programs.kernels_task(target_name, shape, blocks, variant)
    result, _ = toolchain.run_worker(task)
    return {
        "target": target_name,
        "shape": list(shape),
        "blocks": list(blocks.as_tuple()),
        "variant": variant,
        **{k: result[k] for k in ("compiled", "error", "device_kind", "vmem_bytes_per_core")},
        "hbm_bytes_per_device": result["hbm_bytes_per_device"],
        "passes": result["passes"],
        "kernels": kernel_figures(shape, blocks),
    }


def format_kernels(report: dict) -> str:
    b, L, d, n = report["shape"]
    vmem = report["vmem_bytes_per_core"]
    head = (
        f"{report['device_kind']} ({report['target']}, {vmem / 2**20:.0f} MiB VMEM per core): "
        f"selective scan b={b} L={L} D={d} N={n}, blocks {tuple(report['blocks'])}, "
        f"{report['variant']}; compiled by Mosaic: {'yes' if report['compiled'] else 'no'}"
    )
    rows = [
        "| kernel | VMEM KiB | of the core's | GFLOP | G exp | GB moved |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, k in report["kernels"].items():
        rows.append(
            f"| {name} | {k['vmem_bytes'] / 1024:.0f} | {k['vmem_bytes'] / vmem:.2%} | "
            f"{k['flops'] / 1e9:.1f} | {k['transcendentals'] / 1e9:.2f} | "
            f"{k['bytes_accessed'] / 1e9:.2f} |"
        )
    return "\n".join([head, *rows, *map(_format_pass, report["passes"].items()), STATIC])


STATIC = "static figures from the compile, not timings"


def _format_pass(item) -> str:
    name, p = item
    if not p["compiled"]:
        return f"{name} program: does not compile: {p['error']}"
    return (
        f"{name} program: {programs.bytes_in_use(p['memory']) / GIB:.2f} GiB per device, "
        f"{p['memory']['generated_code_bytes'] / 1024:.0f} KiB of machine code, "
        f"{p['kernel_calls']} Mosaic kernels"
    )
