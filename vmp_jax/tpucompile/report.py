"""`vmp compile kernels|train --target v4|v5e|v5p|v6e`: the TPU kernels, or a config's train
step, compiled by libtpu for compile-only TPU devices, and what the compile says.

kernels: the Pallas TPU kernels of a training step (forward saving its chunk states, backward)
and of an inference forward at one scan shape (VMP's backward-scan options, bf16 activations),
on one chip: whether Mosaic compiled them, the program's memory per chip, and per kernel the
VMEM its blocks take (two buffers each, padded to the tiles, with its scratch: from its
BlockSpecs) against the core's VMEM, and its cost estimate. Static figures, not timings.

train: the step `vmp train` jits, on a mesh of every chip of a topology (one host by default;
a multi-host topology such as v5e:4x4 gives the multi-process program), with the per-chip
memory libtpu assigned against the chip's HBM. A step over the HBM is either refused by libtpu
("Ran out of memory on HBM", with what it needs) or compiled with more than the chip holds;
either way the report says by how much, and which knobs help.
"""

import dataclasses
import os
import re

from pallas_kernels.selective_scan_tpu import kernel_figures
from vmp_jax.gpucompile.kernels import check_shape
from vmp_jax.tpucompile import targets, toolchain

GIB = 2**30
KNOBS = (
    "a smaller per-chip batch (--per-device-batch, or data.batch_size), model.remat=True, "
    "model.scan_layers=True (with remat), or a larger chip"
)
_HBM_OOM = re.compile(
    r"required for HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)"
)


def _topology(target: targets.TpuTarget, topology: str | None) -> str:
    return targets.check_topology(target, topology or target.host_topology)


def compile_kernels(target_name: str, shape, blocks, variant: str = "sequential") -> dict:
    """The kernels' figures at `shape` on one chip of `target_name`, as JSON-ready dict."""
    from pallas_kernels.selective_scan_tpu import check_blocks
    from vmp_jax.ssm import VARIANTS, ScanBlocks

    target = targets.get(target_name)
    shape = check_shape(shape)
    blocks = blocks if isinstance(blocks, ScanBlocks) else ScanBlocks(*blocks)
    check_blocks(blocks)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    task = {
        "kind": "kernels",
        "target": target_name,
        "topology": target.host_topology,
        "shape": list(shape),
        "blocks": list(blocks.as_tuple()),
        "variant": variant,
    }
    result = toolchain.run_worker(task)
    return {
        "target": target_name,
        "shape": list(shape),
        "blocks": list(blocks.as_tuple()),
        "variant": variant,
        **{k: result[k] for k in ("compiled", "device_kind", "vmem_bytes_per_core")},
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
    memory = [
        f"{name} program: {_bytes_in_use(p['memory']) / GIB:.2f} GiB per device, "
        f"{p['mosaic_calls']} Mosaic kernels"
        for name, p in report["passes"].items()
    ]
    return "\n".join([head, *rows, *memory, "static figures from the compile, not timings"])


def _bytes_in_use(memory: dict) -> int:
    return (
        memory["argument_bytes"]
        + memory["temp_bytes"]
        + memory["output_bytes"]
        - memory["alias_bytes"]
    )


@dataclasses.dataclass(frozen=True)
class TpuTrainFigures:
    target: str
    topology: str
    devices: int
    chips: int
    hosts: int
    per_device_batch: int
    algorithm: str
    compiled: bool
    error: str
    per_device_bytes: int | None  # what the step takes per device (required, when refused)
    device_memory_bytes: int  # HBM per device (jax's table of TPU chips)
    refused_over_bytes: int | None  # by how much libtpu found it over the HBM it makes available
    mosaic_calls: int  # Mosaic kernel calls in the program (0 for the XLA algorithms)
    compile_s: float  # trace, lower and compile, wall seconds in the worker (not a timing)
    scan_layers: bool
    remat: bool

    @property
    def usable_bytes(self) -> int:
        return self.device_memory_bytes

    @property
    def fits(self) -> bool:
        return self.compiled and self.per_device_bytes <= self.device_memory_bytes

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | {"fits": self.fits}


def compile_train(
    config_file: str,
    overrides,
    target_name: str,
    topology: str | None = None,
    batch: int | None = None,
) -> TpuTrainFigures:
    """TpuTrainFigures of the config's train step on every chip of `topology` (default: one
    host of `target_name`), `batch` clips per device (default: data.batch_size split)."""
    from vmp_jax.experiment import load_config
    from vmp_jax.ssm import resolve_algorithm

    target = targets.get(target_name)
    topology = _topology(target, topology)
    config = load_config(config_file, overrides)  # bad keys fail here, before libtpu
    if batch is not None and batch < 1:
        raise ValueError(f"--per-device-batch must be >= 1, got {batch}")
    task = {
        "kind": "train",
        "target": target_name,
        "topology": topology,
        "config": os.path.abspath(config_file),
        "overrides": list(overrides),
        "per_device_batch": batch,
    }
    result = toolchain.run_worker(task)
    if "input_error" in result:
        examples = ", ".join(targets.EXAMPLE_TOPOLOGIES[target_name])
        raise ValueError(f"{result['input_error']} (valid ones look like {examples})")
    memory, error = result.get("memory"), result.get("error", "")
    per_device = _bytes_in_use(memory) if memory else None
    over = None
    if per_device is None and (oom := _HBM_OOM.search(error)):
        per_device = int(float(oom[1]) * GIB)  # what the step would need
        over = per_device - int(float(oom[2]) * GIB)
    return TpuTrainFigures(
        target_name,
        topology,
        result["devices"],
        result["chips"],
        result["hosts"],
        result["per_device_batch"],
        resolve_algorithm(config.model.scan_algorithm, "tpu"),
        bool(result["compiled"]),
        error,
        per_device,
        result["hbm_bytes_per_device"],
        over,
        int(result.get("mosaic_calls", 0)),
        float(result.get("compile_s", 0.0)),
        bool(config.model.scan_layers),
        bool(config.model.remat),
    )


def format_train(f: TpuTrainFigures) -> str:
    target = targets.get(f.target)
    layers = "scanned" if f.scan_layers else "looped"
    head = (
        f"train step on {f.topology} ({f.devices} x {target.name} devices, {f.chips} chips, "
        f"{f.hosts} host{'s' if f.hosts > 1 else ''}), {f.per_device_batch} clips per device, "
        f"scan {f.algorithm}, {layers} layers{', remat' if f.remat else ''}"
    )
    total = f.device_memory_bytes / GIB
    if f.per_device_bytes is None:
        return f"{head}\ndoes not compile: {f.error}"
    used = f.per_device_bytes / GIB
    if not f.fits:
        over = (f.refused_over_bytes or f.per_device_bytes - f.device_memory_bytes) / GIB
        return (
            f"{head}\nper device {used:.2f} GiB of {total:.1f} GiB: does NOT fit, "
            f"{over:.2f} GiB over; what helps: {KNOBS}"
        )
    return (
        f"{head}\nper device {used:.2f} GiB of {total:.1f} GiB: fits\n"
        f"traced, lowered and compiled in {f.compile_s:.1f} s on this machine"
    )
