"""What the compile worker reports of one program (`programs.compile_program`), on the CPU: a
program that compiles comes back with the memory XLA assigned it, one that does not with its
error and `compiled` false; the TPU and GPU compiles (test_tpu.py, test_gpu.py) report the
same way."""

import contextlib

import jax
import jax.numpy as jnp

from vmp_jax.compile import programs


def _program(x):
    return jnp.sin(x) @ x


def test_a_compile_reports_what_it_did():
    entered = []

    @contextlib.contextmanager
    def tracing():
        entered.append(True)
        yield

    program = jax.jit(_program)
    good = programs.compile_program(
        program, (jax.ShapeDtypeStruct((4, 4), jnp.float32),), tracing, "sine"
    )
    assert good["compiled"] and good["error"] == "" and entered == [True]
    assert good["memory"]["argument_bytes"] == good["memory"]["output_bytes"] == 4 * 4 * 4
    assert good["kernel_calls"] == 1 and good["compile_s"] > 0  # jnp.sin lowers to stablehlo.sine
    bad = programs.compile_program(
        program, (jax.ShapeDtypeStruct((4, 3), jnp.float32),), tracing, "sine"
    )
    assert bad == {
        "compiled": False,
        "error": "TypeError: dot_general requires contracting dimensions to have the same "
        "shape, got (3,) and (4,).",
    }
