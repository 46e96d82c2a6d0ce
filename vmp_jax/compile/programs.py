"""The programs a compile builds, for any target, and what compiling one reports.

`scan_programs` are the selective-scan kernels' programs at one scan shape (`vmp compile
kernels`); `compile_program` traces, lowers and compiles a program in the compile worker and
reports what really happened: the memory XLA assigned per device and the size of the machine
code it generated (a compile that failed has neither), or the compile's own error (out of
memory, a kernel Triton or Mosaic refuses), which is a result to report, not a crash.
"""

import time

# The shape the kernels are tuned at: VMP-S's scan at 8 frames, batch 16 (b, L, D, N).
TARGET_SHAPE = (16, 1569, 768, 16)


def check_scan(shape, variant: str) -> tuple[int, int, int, int]:
    """(b, L, D, N), each >= 1, of a kernels compile with `variant`; ValueError naming the bad
    value otherwise."""
    from vmp_jax.ssm import VARIANTS

    if len(shape) != 4:
        raise ValueError(f"a scan shape is (batch, length, dim, state), got {tuple(shape)}")
    for name, value in zip(("batch", "length", "dim", "state"), shape, strict=True):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return tuple(int(x) for x in shape)


def kernels_task(target: str, shape, blocks, variant: str) -> dict:
    """The compile worker's task for the kernels at checked `shape` with ScanBlocks `blocks`
    (`worker.compile_kernels`)."""
    return {
        "kind": "kernels",
        "target": target,
        "shape": list(shape),
        "blocks": list(blocks.as_tuple()),
        "variant": variant,
    }


def scan_programs(sharding, shape, blocks: list, variant: str) -> dict:
    """The programs a kernels compile checks, by pass, each (jitted function, abstract
    arguments on `sharding`): "training", jax.grad of a sum over y (the forward that saves its
    chunk states, and the backward), and "inference", the forward alone (what vmp eval and
    vmp predict run). VMP's backward-scan options with the D skip and the gate; bf16 u, B, C
    and z, float32 delta, A and D; algorithm "pallas" with `blocks` (ScanBlocks' fields)."""
    import jax
    import jax.numpy as jnp

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


def memory_figures(compiled) -> dict:
    """What XLA assigned a compiled program per device, and the machine code it generated, in
    bytes."""
    m = compiled.memory_analysis()
    return {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "generated_code_bytes": int(m.generated_code_size_in_bytes),
    }


def bytes_in_use(memory: dict) -> int:
    """A program's memory per device: arguments + temporaries + outputs - what outputs alias."""
    return (
        memory["argument_bytes"]
        + memory["temp_bytes"]
        + memory["output_bytes"]
        - memory["alias_bytes"]
    )


def compile_program(program, args, tracing, kernel_call: str) -> dict:
    """Traces `program` on `args` inside `tracing()` (the target's scope: `compiling_for`),
    lowers and compiles it. {"compiled": True, "error": "", "memory": memory_figures,
    "kernel_calls": the Pallas kernel calls (`kernel_call` in the lowered program),
    "compile_s"} when the compile produced an executable with machine code;
    {"compiled": False, "error": "<type>: <message>"} when the compile raised."""
    start = time.perf_counter()
    try:
        with tracing():
            traced = program.trace(*args)
        lowered = traced.lower()
        compiled = lowered.compile()
        memory = memory_figures(compiled)
    except Exception as e:  # XLA and libtpu report a failed compile as an error of their own
        return {"compiled": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "compiled": True,
        "error": "",
        "memory": memory,
        "kernel_calls": lowered.as_text().count(kernel_call),
        "compile_s": time.perf_counter() - start,
    }
