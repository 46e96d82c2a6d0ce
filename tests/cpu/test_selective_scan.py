"""The C++ CPU kernels (`algorithm="cpu"`): their geometry against the reference, per device
under `batch_sharded`, and what happens where they cannot run. The same value and gradient
checks as every algorithm (every option combination, float32 and bfloat16, random shapes) are
in tests/ssm/test_algorithms.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpu_kernels import build
from cpu_kernels import selective_scan as kernels
from tests.ssm.cases import (
    OPTION_COMBOS,
    OPTION_IDS,
    SharedSweeps,
    assert_close,
    assert_matches,
    check_batch_sharded,
    random_inputs,
    scan_args,
    sweep_against_reference,
)
from vmp_jax.ssm import compiling_for, resolve_algorithm, selective_scan

# The kernels run where jax's default backend is the CPU (on a GPU machine `auto` is `pallas`,
# and tests/pallas runs natively there).
pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the CPU kernels: jax's default backend is not the CPU"
)


# The 8 option combinations run as one program; each test checks its part.
SWEEPS = SharedSweeps()


@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
def test_many_tasks_and_blocks_with_partial_ends_match_reference(
    request, reverse, mask, residual, seed
):
    """130 channels: two full 64-lane tasks and a partial one; 29 tokens in blocks of 4: seven
    full blocks and a partial one, taken from the end when reversed."""

    def sweeps(seed):
        args = scan_args(
            random_inputs(seed, 2, 29, 130, 3, with_D=False, with_z=False), jnp.float32
        )
        cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 29, 130)), jnp.float32)
        return args, *sweep_against_reference(kernels.scan, args, cotangent, block=4)

    args, got, want = SWEEPS.get(request, seed, (), sweeps)
    name = OPTION_IDS[OPTION_COMBOS.index((reverse, mask, residual))]
    assert_matches(args, got[name], want[name], f"cpu {name}")


def test_the_block_size_changes_nothing_but_time(seed):
    args = scan_args(random_inputs(seed, 1, 40, 70, 16, with_D=False, with_z=False), jnp.float32)
    vmp = {"reverse": True, "mask_diagonal": True, "residual": True}
    ys = [kernels.scan(**args, block=block, **vmp) for block in (1, 7, 40, 1000)]
    for y in ys[1:]:
        assert_close(y, ys[0], 1e-6, "another block size")
    assert kernels.block_tokens(16) == 32  # (T, 16, 64) float32 decays and states in 256 KiB
    with pytest.raises(ValueError, match="block must be >= 1 tokens, got 0"):
        kernels.scan(**args, block=0, **vmp)


# u (2, 6, 4) and A (4, 3): b, l, d, n = 2, 6, 4, 3; blocks of 4 tokens, 2 saved states.
SHAPES = {
    "u": (2, 6, 4),
    "delta": (2, 6, 4),
    "A": (4, 3),
    "B": (2, 6, 3),
    "C": (2, 6, 3),
    "dy": (2, 6, 4),
    "saved_h": (2, 2, 3, 4),
    "saved_r": (2, 2, 3, 4),
}
# Each larger than expected (or of another rank), so that a kernel without the check reads
# within its buffers (a smaller one would be read out of bounds).
INCONSISTENT = [
    ("u", (2, 24), "(b, l, d)"),
    ("delta", (2, 7, 4), "(2, 6, 4)"),
    ("A", (5, 3), "(d, n) with d = 4"),
    ("A", (4, 3, 1), "(d, n)"),
    ("B", (2, 6, 4), "(2, 6, 3)"),
    ("C", (3, 6, 3), "(2, 6, 3)"),
    ("dy", (2, 6, 5), "(2, 6, 4)"),
    ("saved_h", (2, 3, 3, 4), "(2, 2, 3, 4)"),
    ("saved_r", (2, 2, 4, 4), "(2, 2, 3, 4)"),
]


@pytest.mark.parametrize(
    ("name", "shape", "expected"), INCONSISTENT, ids=[f"{n}{s}" for n, s, _ in INCONSISTENT]
)
def test_the_kernels_refuse_an_operand_of_inconsistent_shape(name, shape, expected):
    """The C++ kernels take every size from u and A: the Python entry that calls them refuses
    any operand that does not match, at trace time, naming it, its shape and the expected one,
    whether called by `scan` (the forward) or by the backward."""
    operands = {k: jnp.zeros(v, jnp.float32) for k, v in SHAPES.items()}
    operands[name] = jnp.zeros(shape, jnp.float32)
    message = re.escape(f"cpu scan: {name} has shape {shape}, expected {expected}")
    if name in ("u", "delta", "A", "B", "C"):
        forward = [operands[k] for k in ("u", "delta", "A", "B", "C")]
        with pytest.raises(ValueError, match=message):
            kernels.scan(*forward, mask_diagonal=True, residual=True, block=4)
    b, l, d, n = SHAPES["saved_h"][0], SHAPES["u"][1], SHAPES["u"][2], SHAPES["A"][1]
    results = [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(b, l, d)] * 2 + [(b, n, d)]]
    results += [jax.ShapeDtypeStruct((1, b, l, n), jnp.float32)] * 2  # one channel block
    options = kernels.Options(4, False, True, True)
    with pytest.raises(ValueError, match=message):
        kernels._call("VmpScanBackward", tuple(results), *operands.values(), options=options)


def _raw(target: str, results, *operands):
    """A direct `jax.ffi.ffi_call` of a kernel, past every Python check (A given transposed,
    as the kernels take it), with VMP's options and blocks of 4 tokens."""
    call = jax.ffi.ffi_call(target, results, vmap_method="sequential")
    return call(*operands, **kernels.Options(4, False, True, True).attributes())


@pytest.mark.parametrize(
    ("name", "shape", "expected"), INCONSISTENT, ids=[f"{n}{s}" for n, s, _ in INCONSISTENT]
)
def test_the_kernels_own_entry_refuses_an_operand_of_inconsistent_shape(name, shape, expected):
    """Called directly (a raw ffi_call), each kernel checks its buffers against u and A itself
    and fails with an error naming the operand and its shape, instead of reading out of
    bounds: the backward, which takes every operand, and both forwards."""
    build.load()
    operands = {k: jnp.zeros(v, jnp.float32) for k, v in SHAPES.items()}
    operands[name] = jnp.zeros(shape, jnp.float32)
    operands["A"] = operands["A"].T  # the kernels' At (n, d)
    named = "At (A transposed)" if name == "A" else name
    given = tuple(operands[name].shape)
    message = re.escape(f"{named} has shape {given}, expected")
    b, l, d, n = 2, 6, 4, 3
    bld, saved = (
        jax.ShapeDtypeStruct((b, l, d), jnp.float32),
        jax.ShapeDtypeStruct((b, 2, n, d), jnp.float32),
    )
    parts = jax.ShapeDtypeStruct((1, b, l, n), jnp.float32)  # one channel block
    backward = (bld, bld, jax.ShapeDtypeStruct((b, n, d), jnp.float32), parts, parts)
    with pytest.raises(jax.errors.JaxRuntimeError, match="VmpScanBackward: " + message):
        jax.block_until_ready(_raw("VmpScanBackward", backward, *operands.values()))
    if name in ("u", "delta", "A", "B", "C"):
        forward = [operands[k] for k in ("u", "delta", "A", "B", "C")]
        with pytest.raises(jax.errors.JaxRuntimeError, match="VmpScanForward: " + message):
            jax.block_until_ready(_raw("VmpScanForward", bld, *forward))
        with pytest.raises(jax.errors.JaxRuntimeError, match="VmpScanForwardSaving: " + message):
            jax.block_until_ready(_raw("VmpScanForwardSaving", (bld, saved, saved), *forward))


def test_the_kernels_own_entry_refuses_results_of_inconsistent_shape():
    """A result buffer smaller than u and A make it would be written out of bounds: refused,
    named, on each kernel."""
    build.load()
    forward = [jnp.zeros(SHAPES[k], jnp.float32) for k in ("u", "delta", "A", "B", "C")]
    forward[2] = forward[2].T
    backward = forward + [jnp.zeros(SHAPES[k], jnp.float32) for k in ("dy", "saved_h", "saved_r")]
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    bld, saved, parts = f32(2, 6, 4), f32(2, 2, 3, 4), f32(1, 2, 6, 3)
    calls = [
        ("VmpScanForward", f32(2, 5, 4), forward, "y has shape (2, 5, 4)"),
        ("VmpScanForwardSaving", (bld, f32(2, 1, 3, 4), saved), forward, "saved_h has shape"),
        ("VmpScanForwardSaving", (bld, saved, f32(2, 2, 3, 3)), forward, "saved_r has shape"),
        ("VmpScanBackward", (f32(2, 6), bld, f32(2, 3, 4), parts, parts), backward, "du has"),
        ("VmpScanBackward", (bld, bld, f32(2, 3, 3), parts, parts), backward, "dA_part has"),
        ("VmpScanBackward", (bld, bld, f32(2, 3, 4), parts, f32(1, 2, 6, 2)), backward, "dC_part"),
    ]
    for target, results, operands, message in calls:
        with pytest.raises(jax.errors.JaxRuntimeError, match=re.escape(f"{target}: {message}")):
            jax.block_until_ready(_raw(target, results, *operands))


def test_batch_sharded_kernels_match_in_value_and_gradient(seed):
    """Under `batch_sharded(mesh)` each of the 8 devices runs the kernels on its shard of the
    batch; without it XLA would gather the whole batch onto every device for the custom call."""
    lowered = check_batch_sharded("cpu", seed)
    assert "shard_map" in lowered or "sdy.manual_computation" in lowered


def test_auto_on_cpu_is_the_kernels_and_falls_back_where_they_cannot_run(monkeypatch):
    args = scan_args(random_inputs(0, 1, 6, 2, 2), jnp.float32)
    assert resolve_algorithm("auto", "cpu") == "cpu"
    assert "VmpScanForward" in jax.jit(lambda a: selective_scan(**a)).lower(args).as_text()
    with jax.enable_x64(True):
        x64 = scan_args(random_inputs(0, 1, 6, 2, 2), jnp.float64)
        assert selective_scan(**x64).dtype == jnp.float64  # sequential: the kernels are float32
        with pytest.raises(ValueError, match="'cpu' cannot scan here: it takes no float64"):
            selective_scan(**x64, algorithm="cpu")
    # A machine without a compiler: auto takes sequential, an explicit choice says why.
    monkeypatch.setattr(build, "status", lambda: "no C++ compiler found")
    assert resolve_algorithm("auto", "cpu") == "sequential"
    assert "VmpScanForward" not in jax.jit(lambda a: selective_scan(**a)).lower(args).as_text()
    with pytest.raises(ValueError, match="kernels are unavailable here: no C\\+\\+ compiler"):
        selective_scan(**args, algorithm="cpu")


def test_the_kernels_are_refused_when_tracing_for_a_gpu():
    args = scan_args(random_inputs(0, 1, 6, 2, 2), jnp.float32)
    with (
        compiling_for("gpu"),
        pytest.raises(ValueError, match="'cpu' cannot scan here: it runs on cpu only, and the "),
    ):
        selective_scan(**args, algorithm="cpu")
    with compiling_for("cpu"):  # traced for the CPU, explicitly: the kernels
        lowered = jax.jit(lambda a: selective_scan(**a, algorithm="cpu")).lower(args).as_text()
    assert "VmpScanForward" in lowered


def test_the_library_is_built_once_per_machine_and_shared(tmp_path, monkeypatch):
    """A second build finds the cached library; a different cache builds anew; no compiler is
    KernelUnavailable naming it."""
    monkeypatch.setenv("VMP_KERNEL_CACHE", str(tmp_path))
    first = build.build()
    assert first.parent == tmp_path and first.exists()
    stamp = first.stat().st_mtime_ns
    assert build.build() == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(build.KernelUnavailable, match="no C\\+\\+ compiler found"):
        build.build()


def test_the_kernels_exp_is_within_2_ulp():
    """Two tokens, one state: with u_1 = delta_1 = B_1 = C_2 = 1 and u_2 = 0, the second output
    is exactly a_2 = exp(delta_2 A) as the kernel computes it (delta_2 A rounded to float32
    first, as there). Over exponents from 0 to -87 its error is within 2 float32 ulp."""
    exponents = -np.linspace(0.0, 87.0, 8191, dtype=np.float32)  # 128 tasks of 64 channels
    A = np.array([-1.0, -3.7], np.float32)[None, :].repeat(len(exponents) // 2 + 1, 0).ravel()
    A = A[: len(exponents), None]  # (d, 1): -1 and -3.7 alternating
    delta2 = (exponents / A[:, 0]).astype(np.float32)
    ones = np.ones((1, 2, len(exponents)), np.float32)
    delta = ones.copy()
    delta[0, 1] = delta2
    u = ones.copy()
    u[0, 1] = 0.0
    B = C = jnp.ones((1, 2, 1))
    args = (jnp.asarray(u), jnp.asarray(delta), jnp.asarray(A), B, C)
    y = kernels.scan(*args, mask_diagonal=False, residual=False)
    got = np.asarray(y)[0, 1]
    want = np.exp((delta2 * A[:, 0]).astype(np.float32).astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.isfinite(got).all() and got.min() > 0
    assert (np.abs(got - want) / ulp).max() <= 2.0
