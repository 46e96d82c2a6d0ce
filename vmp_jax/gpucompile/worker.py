"""The compile subprocess of `vmp gpu-compile` (run by `toolchain.run_worker`, with the CUDA
plugin on its path): reads one task as JSON on stdin, compiles it for compile-only devices of
the task's target, and prints one JSON line with what XLA reports.

Tasks:
  {"kind": "kernels", "target", "shape": [b, L, D, N], "blocks": [q, c, w, s, g], "variant"}
      the forward and backward Pallas kernels (VMP's backward-scan options, bf16 u, B, C, z,
      float32 delta, A, D), compiled as jax.grad of a sum over y.
  {"kind": "train", "target", "config", "overrides", "devices", "per_device_batch"}
      the train step `vmp train` jits, on a one-host mesh of `devices` devices.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import SingleDeviceSharding

from vmp_jax.gpucompile import targets
from vmp_jax.ssm.api import compiling_for

TRITON_CALL = "__gpu$xla.gpu.triton"  # how a native Pallas kernel appears in lowered HLO


def compile_only_devices(target: str, count: int) -> list:
    """`count` compile-only devices of one host of `target` GPUs."""
    text = targets.get(target).config_text()
    topology = topologies.get_topology_desc(
        platform="cuda", topology_name="", target_config=text, topology=f"1x1x{count}"
    )
    return list(topology.devices)


def memory_figures(compiled) -> dict:
    """What XLA assigned a compiled program per device, in bytes."""
    m = compiled.memory_analysis()
    return {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
    }


def scan_programs(sharding, shape, blocks: list, variant: str) -> dict:
    """The programs a kernels compile checks, by pass, each (jitted function, abstract
    arguments on `sharding`): "training", jax.grad of a sum over y (the forward that saves its
    chunk states, and the backward), and "inference", the forward alone (what vmp eval and
    vmp predict run). VMP's backward-scan options with the D skip and the gate; bf16 u, B, C
    and z, float32 delta, A and D; algorithm "pallas" with `blocks` (ScanBlocks' fields)."""
    from vmp_jax.ssm import ScanBlocks, selective_scan

    b, L, d, n = shape

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    bf16, f32 = jnp.bfloat16, jnp.float32
    u, delta, z = spec((b, L, d), bf16), spec((b, L, d), f32), spec((b, L, d), bf16)
    A, B, D = spec((d, n), f32), spec((b, L, n), bf16), spec((d,), f32)
    options = dict(
        reverse=True,
        mask_diagonal=True,
        residual=True,
        algorithm="pallas",
        blocks=ScanBlocks(*blocks),
        variant=variant,
    )

    def scan(*args):
        return selective_scan(*args, **options)

    def loss(*args):
        return jnp.sum(scan(*args).astype(f32))

    args = (u, delta, A, B, B, D, z)
    return {
        "training": (jax.jit(jax.grad(loss, argnums=tuple(range(7)))), args),
        "inference": (jax.jit(scan), args),
    }


def compile_kernels(task: dict) -> dict:
    (device,) = compile_only_devices(task["target"], 1)
    programs = scan_programs(
        SingleDeviceSharding(device), task["shape"], task["blocks"], task["variant"]
    )
    memory = {}
    for name, (program, args) in programs.items():
        with compiling_for("gpu", targets.get(task["target"]).sms):  # natively, as on the GPU
            traced = program.trace(*args)
        memory[name] = memory_figures(traced.lower().compile())
    return {"compiled": True, "memory": memory}


def compile_train_step(task: dict) -> dict:
    from vmp_jax.engine import steps
    from vmp_jax.experiment import load_config

    devices = compile_only_devices(task["target"], task["devices"])
    config = load_config(task["config"], task["overrides"])
    config.data.batch_size = task["per_device_batch"] * len(devices)
    train_step, abstract_state, abstract_batch = steps.abstract_train_step(config, devices)
    start = time.perf_counter()
    try:
        with compiling_for("gpu", targets.get(task["target"]).sms):  # as on the GPU
            traced = train_step.trace(abstract_state, abstract_batch)
        lowered = traced.lower()
        compiled = lowered.compile()
    except Exception as e:  # XLA reports a failed compile as a RuntimeError of its own kinds
        return {"compiled": False, "error": f"{type(e).__name__}: {e}"}
    seconds = time.perf_counter() - start
    kernels = lowered.as_text().count(TRITON_CALL)
    return {
        "compiled": True,
        "error": "",
        "memory": memory_figures(compiled),
        "triton_calls": kernels,
        "compile_s": seconds,
    }


def serve(kinds: dict) -> None:
    """Reads one task as JSON on stdin, runs `kinds[task["kind"]]` on it and prints its result
    as one JSON line (what `toolchain.run_compile_worker` reads)."""
    task = json.loads(sys.stdin.read())
    print(json.dumps(kinds[task["kind"]](task)), flush=True)


if __name__ == "__main__":
    serve({"kernels": compile_kernels, "train": compile_train_step})
