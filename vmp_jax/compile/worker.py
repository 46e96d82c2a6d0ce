"""The compile subprocess of `vmp compile` (started by `toolchain.run_worker` with the toolchain
of the target's family on its path): reads one task as JSON on stdin, compiles it for
compile-only devices of the task's target, and prints one JSON line with what the compile
reports. What is particular to a family (its devices, the scope its programs are traced in,
how a Pallas kernel appears in HLO) is in `gpu/worker.py` and `tpu/worker.py`.

Tasks:
  {"kind": "kernels", "target", "shape": [b, L, D, N], "blocks", "variant"}
      the Pallas kernels' training pass (jax.grad of a sum over y) and inference forward on
      one device (`programs.scan_programs`); per pass what `programs.compile_program` reports,
      and "compiled": whether every pass compiled.
  {"kind": "train", "target", "place", "config", "overrides", "per_device_batch"}
      the train step `vmp train` jits, on a mesh of the place's devices: a number of GPUs on
      one host, or a TPU topology (a multi-host one gives the multi-process program). Input
      the target cannot take comes back as {"input_error"}.
"""

import json
import sys


def _family(target: str):
    """The worker module of the target's family."""
    from vmp_jax.compile import targets

    if targets.family(target) == "gpu":
        from vmp_jax.compile.gpu import worker
    else:
        from vmp_jax.compile.tpu import worker
    return worker


def compile_kernels(task: dict) -> dict:
    from jax.sharding import SingleDeviceSharding

    from vmp_jax.compile import programs

    family, target = _family(task["target"]), task["target"]
    devices = family.devices(target, None)[:1]
    scans = programs.scan_programs(
        SingleDeviceSharding(devices[0]), task["shape"], task["blocks"], task["variant"]
    )
    passes = {
        name: programs.compile_program(
            program, args, lambda: family.tracing(target), family.KERNEL_CALL
        )
        for name, (program, args) in scans.items()
    }
    errors = [f"{name}: {p['error']}" for name, p in passes.items() if not p["compiled"]]
    described = family.describe(devices, target)
    return {"compiled": not errors, "error": "; ".join(errors), **described, "passes": passes}


def compile_train_step(task: dict) -> dict:
    from vmp_jax.compile import programs
    from vmp_jax.compile.train import per_device_batch
    from vmp_jax.engine import steps
    from vmp_jax.experiment import load_config

    family, target = _family(task["target"]), task["target"]
    try:
        devices = family.devices(target, task["place"])
    except Exception as e:  # libtpu's INVALID_ARGUMENT for a layout it cannot make
        return {"input_error": f"{family.PLACE_FLAG} {task['place']!r}: {e}"}
    config = load_config(task["config"], task["overrides"])
    try:
        each = per_device_batch(config, len(devices), task["per_device_batch"])
    except ValueError as e:
        return {"input_error": str(e)}
    config.data.batch_size = each * len(devices)
    described = family.describe(devices, target) | {"per_device_batch": each}
    try:
        train_step, abstract_state, abstract_batch = steps.abstract_train_step(config, devices)
    except Exception as e:  # a mesh or sharding the devices cannot take
        return {"compiled": False, "error": f"{type(e).__name__}: {e}", **described}
    compiled = programs.compile_program(
        train_step, (abstract_state, abstract_batch), lambda: family.tracing(target),
        family.KERNEL_CALL,
    )  # fmt: skip
    return described | compiled


KINDS = {"kernels": compile_kernels, "train": compile_train_step}


def serve() -> None:
    """Reads one task as JSON on stdin, runs it and prints its result as one JSON line (what
    `toolchain.run_worker` reads)."""
    task = json.loads(sys.stdin.read())
    print(json.dumps(KINDS[task["kind"]](task)), flush=True)


if __name__ == "__main__":
    serve()
