"""`vmp gpu-compile train`: a config's real train step compiled for N GPUs of a target.

The step is the one `vmp train` jits (`train.steps.make_train_step`: the same function, state
shardings from the parameters' logical axes on the config's mesh, the config's dtype, remat,
scan algorithm and accumulation), traced on abstract arguments placed on compile-only devices
of one host. Reported: whether it compiled (XLA's error if not) and the per-device memory XLA
assigned (arguments + temporaries + outputs - what outputs alias), against the device's.

Whether it fits is judged against the share of the device's memory that jax's GPU allocator
takes (XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 unless set): that is what `vmp train` gets.
"""

import dataclasses
import os

from vmp_jax.gpucompile import targets, toolchain

DEFAULT_MEMORY_FRACTION = 0.75  # jax's GPU allocator's default share of device memory


def memory_fraction() -> float:
    return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEMORY_FRACTION))


@dataclasses.dataclass(frozen=True)
class TrainFigures:
    target: str
    devices: int
    per_device_batch: int
    algorithm: str
    compiled: bool
    error: str
    per_device_bytes: int | None
    device_memory_bytes: int
    usable_bytes: int
    triton_calls: int  # native Pallas kernel calls in the program (0 for the XLA algorithms)
    compile_s: float  # trace, lower and compile, wall seconds in the worker (not a GPU timing)
    scan_layers: bool

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


def compile_train(
    config_file: str, overrides, target_name: str, devices: int = 1, batch: int | None = None
):
    """TrainFigures of the config's train step on `devices` GPUs of `target_name`."""
    from vmp_jax.engine.sharding import make_mesh
    from vmp_jax.experiment import load_config
    from vmp_jax.ssm import resolve_algorithm

    target = targets.get(target_name)
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    config = load_config(config_file, overrides)  # bad keys fail here, before the toolchain
    make_mesh(config.mesh, list(range(devices)))  # a mesh that cannot take N devices, too
    each = per_device_batch(config, devices, batch)
    task = {
        "kind": "train",
        "target": target_name,
        "config": os.path.abspath(config_file),
        "overrides": list(overrides),
        "devices": devices,
        "per_device_batch": each,
    }
    result = toolchain.run_worker(task).result
    memory = result.get("memory")
    per_device = None
    if memory:
        per_device = (
            memory["argument_bytes"]
            + memory["temp_bytes"]
            + memory["output_bytes"]
            - memory["alias_bytes"]
        )
    return TrainFigures(
        target_name,
        devices,
        each,
        resolve_algorithm(config.model.scan_algorithm, "gpu"),
        bool(result["compiled"]),
        result.get("error", ""),
        per_device,
        target.memory_bytes,
        int(memory_fraction() * target.memory_bytes),
        int(result.get("triton_calls", 0)),
        float(result.get("compile_s", 0.0)),
        bool(config.model.scan_layers),
    )


def format_result(f: TrainFigures) -> str:
    gib = 2**30
    target = targets.get(f.target)
    head = (
        f"train step on {f.devices} x {target.name}, {f.per_device_batch} clips per device, "
        f"scan {f.algorithm}, {'scanned' if f.scan_layers else 'looped'} layers"
    )
    if not f.compiled:
        return f"{head}\ndoes not compile: {f.error}"
    verdict = "fits" if f.fits else "does NOT fit"
    used, total = f.per_device_bytes / gib, f.device_memory_bytes / gib
    return (
        f"{head}\nper device {used:.2f} GiB of {total:.1f} GiB ({f.usable_bytes / gib:.1f} GiB "
        f"for jax at XLA_PYTHON_CLIENT_MEM_FRACTION={memory_fraction():g}): {verdict}\n"
        f"traced, lowered and compiled in {f.compile_s:.1f} s on this machine"
    )
