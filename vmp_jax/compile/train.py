"""`vmp compile train`: a config's real train step compiled for a target's devices.

The step is the one `vmp train` jits (`engine.steps.abstract_train_step`: the same function,
state shardings from the parameters' logical axes on the config's mesh, the config's dtype,
remat, scan algorithm and accumulation), traced on abstract arguments placed on compile-only
devices: N GPUs of one host, or every chip of a TPU topology (one host by default; a
multi-host topology gives the multi-process program). Reported: whether it compiled (the
compiler's error if not) and the per-device memory it assigned (arguments + temporaries +
outputs - what outputs alias), against the device's.

Whether it fits is judged against what `vmp train` gets of a device: on GPUs the share of its
memory that jax's allocator takes (XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 unless set), on TPUs
the chip's HBM. A TPU step over the HBM is either refused by libtpu ("Ran out of memory on
HBM", with what it needs) or compiled with more than the chip holds; either way the report
says by how much, and which knobs help.
"""

import dataclasses
import os
import re

from vmp_jax.compile import programs, targets, toolchain
from vmp_jax.compile.tpu import targets as tpu_targets

GIB = 2**30
DEFAULT_MEMORY_FRACTION = 0.75  # jax's GPU allocator's default share of device memory
KNOBS = (
    "a smaller per-device batch (--per-device-batch, or data.batch_size), model.remat=True, "
    "model.scan_layers=True (with remat), or a larger device"
)
_HBM_OOM = re.compile(
    r"required for HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)"
)


def memory_fraction() -> float:
    return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEMORY_FRACTION))


@dataclasses.dataclass(frozen=True)
class TrainFigures:
    target: str
    topology: str | None  # a TPU topology ("v5e:4x4"); None for GPUs (one host)
    devices: int
    chips: int
    hosts: int
    per_device_batch: int
    algorithm: str
    compiled: bool
    error: str
    per_device_bytes: int | None  # what the step takes per device (required, when refused)
    device_memory_bytes: int
    usable_bytes: int  # what `vmp train` gets of it
    refused_over_bytes: int | None  # by how much libtpu found it over the HBM it makes available
    kernel_calls: int  # Pallas kernel calls in the program (0 for the XLA algorithms)
    compile_s: float  # trace, lower and compile, wall seconds in the worker (not a timing)
    scan_layers: bool
    remat: bool

    @property
    def fits(self) -> bool:
        return self.compiled and self.per_device_bytes <= self.usable_bytes

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | {"fits": self.fits}


def per_device_batch(config, devices: int, override: int | None) -> int:
    """The batch one device takes: `override`, else data.batch_size (the global batch) split
    over the devices (ValueError when it does not split)."""
    if override is not None:
        if override < 1:
            raise ValueError(f"--per-device-batch must be >= 1, got {override}")
        return override
    from vmp_jax.engine.sharding import per_device

    return per_device(config.data.batch_size, "data.batch_size", devices)


def _place(target_name: str, config, place, batch: int | None):
    """The devices to compile for, checked before the toolchain starts: a GPU count (default
    1) that the config's mesh and batch take, or a topology of the TPU (default one host)."""
    target = targets.get(target_name)
    if targets.family(target_name) == "tpu":
        if place is not None and not isinstance(place, str):
            raise ValueError("--devices is for GPU targets; a TPU target takes --topology")
        return tpu_targets.check_topology(target, place or target.host_topology)
    if isinstance(place, str):
        raise ValueError("--topology is for TPU targets; a GPU target takes --devices")
    from vmp_jax.engine.sharding import make_mesh

    devices = 1 if place is None else place
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    make_mesh(config.mesh, list(range(devices)))  # a mesh that cannot take N devices
    per_device_batch(config, devices, batch)
    return devices


def compile_train(config_file: str, overrides, target_name: str, place=None, batch=None):
    """TrainFigures of the config's train step on `place` of `target_name`: a number of GPUs
    (default 1) or a TPU topology (default one host), `batch` clips per device (default:
    data.batch_size split over the devices)."""
    from vmp_jax.experiment import load_config

    config = load_config(config_file, overrides)  # bad keys fail here, before the toolchain
    if batch is not None and batch < 1:
        raise ValueError(f"--per-device-batch must be >= 1, got {batch}")
    place = _place(target_name, config, place, batch)
    task = {
        "kind": "train",
        "target": target_name,
        "place": place,
        "config": os.path.abspath(config_file),
        "overrides": list(overrides),
        "per_device_batch": batch,
    }
    result, _ = toolchain.run_worker(task)
    if "input_error" in result:
        examples = ", ".join(tpu_targets.EXAMPLE_TOPOLOGIES.get(target_name, ()))
        raise ValueError(f"{result['input_error']} (valid ones look like {examples})")
    return _figures(target_name, place, config, result)


def _figures(target_name: str, place, config, result: dict) -> TrainFigures:
    """TrainFigures from the worker's result: the memory it assigned per device, or, where
    libtpu refused the step for memory, what it said the step needs."""
    from vmp_jax.ssm import resolve_algorithm

    family = targets.family(target_name)
    memory, error = result.get("memory"), result.get("error", "")
    per_device = programs.bytes_in_use(memory) if memory else None
    over = None
    if per_device is None and (oom := _HBM_OOM.search(error)):
        per_device = int(float(oom[1]) * GIB)  # what the step would need
        over = per_device - int(float(oom[2]) * GIB)
    device_memory = _device_memory(target_name, result)
    usable = int(memory_fraction() * device_memory) if family == "gpu" else device_memory
    return TrainFigures(
        target_name,
        place if family == "tpu" else None,
        result["devices"],
        result["chips"],
        result["hosts"],
        result["per_device_batch"],
        resolve_algorithm(config.model.scan_algorithm, family),
        bool(result["compiled"]),
        error,
        per_device,
        device_memory,
        usable,
        over,
        int(result.get("kernel_calls", 0)),
        float(result.get("compile_s", 0.0)),
        bool(config.model.scan_layers),
        bool(config.model.remat),
    )


def _device_memory(target_name: str, result: dict) -> int:
    """A device's memory: the GPU's from its published figures, a TPU chip's HBM from jax's
    table of TPU chips (as the worker found it)."""
    if targets.family(target_name) == "gpu":
        return targets.get(target_name).memory_bytes
    return result["hbm_bytes_per_device"]


def format_train(f: TrainFigures) -> str:
    target = targets.get(f.target)
    where = f"{f.devices} x {target.name}"
    if f.topology is not None:
        hosts = f"{f.hosts} host{'s' if f.hosts > 1 else ''}"
        where = f"{f.topology} ({where} devices, {f.chips} chips, {hosts})"
    layers = "scanned" if f.scan_layers else "looped"
    head = (
        f"train step on {where}, {f.per_device_batch} clips per device, scan {f.algorithm}, "
        f"{layers} layers{', remat' if f.remat else ''}"
    )
    if f.per_device_bytes is None:
        return f"{head}\ndoes not compile: {f.error}"
    used, total = f.per_device_bytes / GIB, f.device_memory_bytes / GIB
    share = ""
    if f.usable_bytes != f.device_memory_bytes:
        share = (
            f" ({f.usable_bytes / GIB:.1f} GiB for jax at "
            f"XLA_PYTHON_CLIENT_MEM_FRACTION={memory_fraction():g})"
        )
    if not f.fits:
        over = (f.refused_over_bytes or f.per_device_bytes - f.usable_bytes) / GIB
        return (
            f"{head}\nper device {used:.2f} GiB of {total:.1f} GiB{share}: does NOT fit, "
            f"{over:.2f} GiB over; what helps: {KNOBS}"
        )
    return (
        f"{head}\nper device {used:.2f} GiB of {total:.1f} GiB{share}: fits\n"
        f"traced, lowered and compiled in {f.compile_s:.1f} s on this machine"
    )
