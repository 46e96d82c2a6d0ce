"""selective_scan composes with jit, vmap and grad, and compiles once per shape."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.ssm.cases import (
    GRAD_TOLERANCE,
    TOLERANCE,
    assert_close,
    random_inputs,
    runs_here,
    scan_args,
)
from vmp_jax.ssm import ALGORITHMS, api, resolve_algorithm, selective_scan

VMP_OPTIONS = {"reverse": True, "mask_diagonal": True, "residual": True}


def _args(seed, b=2, l=11):
    return scan_args(random_inputs(seed, b, l, 3, 2), jnp.float32)


@pytest.mark.parametrize("algorithm", [name for name in ALGORITHMS if runs_here(name)])
def test_jit_vmap_grad_compose(algorithm, seed):
    args = _args(seed)

    def loss(a):
        return jnp.sum(selective_scan(**a, algorithm=algorithm, **VMP_OPTIONS) ** 2)

    eager = jax.grad(loss)(args)
    jitted = jax.jit(jax.grad(loss))(args)
    for key in args:
        assert_close(jitted[key], eager[key], GRAD_TOLERANCE["float32"], f"jit d{key}")

    # vmap over an extra leading axis of everything but the parameters A and D.
    stacked = {k: (v if k in ("A", "D") else jnp.stack([v, 2 * v])) for k, v in args.items()}
    axes = {k: (None if k in ("A", "D") else 0) for k in args}
    mapped = jax.vmap(
        lambda a: selective_scan(**a, algorithm=algorithm, **VMP_OPTIONS), in_axes=(axes,)
    )(stacked)
    for i in range(2):
        one = {k: (v if k in ("A", "D") else v[i]) for k, v in stacked.items()}
        direct = selective_scan(**one, algorithm=algorithm, **VMP_OPTIONS)
        assert_close(mapped[i], direct, TOLERANCE["float32"], f"vmap slice {i}")


@pytest.mark.parametrize("algorithm", ["sequential", "chunked"])
def test_no_retrace_for_new_values_of_the_same_shape(algorithm):
    chex.clear_trace_counter()  # the counter is keyed by code location, shared by parametrizations

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(a):
        return jax.grad(lambda a: jnp.sum(selective_scan(**a, algorithm=algorithm)))(a)

    for seed in range(3):
        step(_args(seed))
    with pytest.raises(AssertionError, match="traced > 1 times"):
        step(_args(0, l=12))  # a new shape must trace again: proves the counter is live


def test_eager_calls_compile_once_per_shape():
    api._selective_scan.clear_cache()
    for seed in range(3):
        selective_scan(**_args(seed), algorithm="sequential")
    assert api._selective_scan._cache_size() == 1
    selective_scan(**_args(0, l=12), algorithm="sequential")
    assert api._selective_scan._cache_size() == 2


def test_auto_resolves_per_backend():
    """What benchmarks/RESULTS.md and docs/scan.md promise: the C++ kernels on CPU, the Pallas
    kernels on GPU and on TPU; float64 takes the backend's best XLA algorithm."""
    assert [resolve_algorithm("auto", b) for b in ("cpu", "gpu", "tpu")] == [
        "cpu",
        "pallas",
        "pallas",
    ]
    assert resolve_algorithm("auto", "tpu", jnp.float64) == "chunked"
    assert resolve_algorithm("auto", "cpu", jnp.float64) == "sequential"
    assert resolve_algorithm("auto", "gpu", jnp.float64) == "chunked"
    assert all(name in ALGORITHMS for name in api.AUTO_BY_BACKEND.values())
    args = _args(1)
    auto = resolve_algorithm("auto")  # on this machine's backend (tests/cpu: the kernels on CPU)
    np.testing.assert_array_equal(selective_scan(**args), selective_scan(**args, algorithm=auto))


def test_tracing_for_a_gpu_takes_the_native_kernels_and_float64_falls_back():
    """`compiling_for("gpu")` (what `vmp compile` traces under for a GPU, on a CPU jax): "auto"
    is the Pallas kernels, lowered natively (Triton), not in the interpreter."""
    args = _args(2)
    with api.compiling_for("gpu"):
        assert api.target_backend() == "gpu" and resolve_algorithm("auto") == "pallas"
        traced = jax.jit(lambda a: selective_scan(**a, reverse=True)).trace(args)
        text = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == 1
    assert api.target_backend() == jax.default_backend()  # the context ended
    with jax.enable_x64(True), api.compiling_for("gpu"):
        x64 = scan_args(random_inputs(0, 1, 6, 2, 2), jnp.float64)
        y = selective_scan(**x64)  # the kernels take no float64: chunked runs instead
        want = selective_scan(**x64, algorithm="reference")
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-10)


def test_tracing_for_a_tpu_takes_the_mosaic_kernels_and_a_cpu_runs_them():
    """`compiling_for("tpu")`: "auto" is the TPU kernels; one traced program lowers to Mosaic
    for a TPU and to Pallas' interpreter for this CPU, where it runs and equals the reference.
    Outside the context the CPU's own algorithm is back."""
    args = _args(3)
    with api.compiling_for("tpu"):
        assert resolve_algorithm("auto") == "pallas"
        traced = jax.jit(lambda a: selective_scan(**a, reverse=True, residual=True)).trace(args)
    assert traced.lower(lowering_platforms=("tpu",)).as_text().count("tpu_custom_call") == 1
    assert "tpu_custom_call" not in traced.lower().as_text()
    y = traced.lower().compile()(args)
    want = selective_scan(**args, reverse=True, residual=True, algorithm="reference")
    assert_close(y, want, TOLERANCE["float32"], "TPU kernels on CPU")
    assert api.target_backend() == "cpu" and resolve_algorithm("auto") == "cpu"


def test_bfloat16_inputs_keep_float32_state():
    """A long bf16 sequence: the float32 state keeps the residual running sum accurate."""
    args = scan_args(random_inputs(3, 1, 300, 2, 2), jnp.bfloat16)
    y = selective_scan(**args, algorithm="sequential", residual=True)
    want = selective_scan(
        **{k: v.astype(jnp.float32) for k, v in args.items()}, algorithm="reference", residual=True
    )
    assert y.dtype == jnp.bfloat16
    assert_close(y, want, TOLERANCE["bfloat16"], "bf16 long sequence")
