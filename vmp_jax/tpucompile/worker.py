"""The compile subprocess of `vmp compile --target v4|v5e|v5p|v6e` (run by
`toolchain.run_worker`, with libtpu on its path): reads one task as JSON on stdin, compiles it
for compile-only TPU devices of the task's topology, and prints one JSON line with what libtpu
reports.

Tasks:
  {"kind": "kernels", "target", "topology", "shape": [b, L, D, N], "blocks", "variant"}
      the TPU kernels' training pass (jax.grad of a sum over y) and inference forward, on one
      chip, as `vmp gpu-compile kernels` compiles the GPU's (gpucompile.worker.scan_programs).
  {"kind": "train", "target", "topology", "config", "overrides", "per_device_batch"}
      the train step `vmp train` jits, on a mesh of every chip of the topology (a multi-host
      topology gives the multi-process program).
"""

import time

from jax.experimental import topologies
from jax.sharding import SingleDeviceSharding

from vmp_jax.gpucompile.worker import memory_figures, scan_programs, serve
from vmp_jax.ssm.api import compiling_for
from vmp_jax.tpucompile import targets

MOSAIC_CALL = "tpu_custom_call"  # how a Mosaic kernel appears in lowered HLO


def topology_devices(name: str) -> list:
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)


def _describe(devices: list, target: str) -> dict:
    """The devices, and each one's HBM and VMEM (jax's own table of TPU chips: per TensorCore,
    times the cores a device spans)."""
    from jax.experimental.pallas import tpu as pltpu

    first = devices[0]
    cores = getattr(first, "num_cores", 1)
    chip = getattr(pltpu.ChipVersion, targets.get(target).chip)
    info = pltpu.get_tpu_info_for_chip(chip, cores)
    return {
        "device_kind": first.device_kind,
        "devices": len(devices),
        "chips": len({tuple(d.coords) for d in devices}),
        "hosts": len({d.process_index for d in devices}),
        "hbm_bytes_per_device": int(info.hbm_capacity_bytes * cores),
        "vmem_bytes_per_core": int(info.vmem_capacity_bytes),
    }


def _compile(program, args) -> tuple[dict, int, float]:
    start = time.perf_counter()
    with compiling_for("tpu"):  # the TPU kernels, lowered to Mosaic for these devices
        traced = program.trace(*args)
    lowered = traced.lower()
    compiled = lowered.compile()
    calls = lowered.as_text().count(MOSAIC_CALL)
    return memory_figures(compiled), calls, time.perf_counter() - start


def compile_kernels(task: dict) -> dict:
    devices = topology_devices(task["topology"])
    programs = scan_programs(
        SingleDeviceSharding(devices[0]), task["shape"], task["blocks"], task["variant"]
    )
    passes = {}
    for name, (program, args) in programs.items():
        memory, calls, seconds = _compile(program, args)
        passes[name] = {"memory": memory, "mosaic_calls": calls, "compile_s": seconds}
    described = _describe(devices[:1], task["target"])
    return {"compiled": True, "error": "", **described, "passes": passes}


def compile_train_step(task: dict) -> dict:
    from vmp_jax.engine import steps
    from vmp_jax.experiment import load_config
    from vmp_jax.gpucompile.train import per_device_batch

    try:
        devices = topology_devices(task["topology"])
    except Exception as e:  # libtpu's INVALID_ARGUMENT for a layout it cannot make
        return {"input_error": f"--topology {task['topology']!r}: {e}"}
    config = load_config(task["config"], task["overrides"])
    try:
        each = per_device_batch(config, len(devices), task["per_device_batch"])
    except ValueError as e:
        return {"input_error": str(e)}
    config.data.batch_size = each * len(devices)
    described = _describe(devices, task["target"]) | {"per_device_batch": each}
    try:
        train_step, abstract_state, abstract_batch = steps.abstract_train_step(config, devices)
        memory, calls, seconds = _compile(train_step, (abstract_state, abstract_batch))
    except Exception as e:  # libtpu reports a failed compile (out of memory, ...) as an error
        return {"compiled": False, "error": f"{type(e).__name__}: {e}", **described}
    return {
        "compiled": True,
        "error": "",
        **described,
        "memory": memory,
        "mosaic_calls": calls,
        "compile_s": seconds,
    }


if __name__ == "__main__":
    serve({"kernels": compile_kernels, "train": compile_train_step})
