"""Shared pieces of the scan tests: random inputs, the SPEC recurrence in float64, comparisons."""

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# (reverse, mask_diagonal, residual): all 8 option combinations.
OPTION_COMBOS = list(itertools.product([False, True], repeat=3))
OPTION_IDS = [f"rev{int(r)}-mask{int(m)}-res{int(s)}" for r, m, s in OPTION_COMBOS]

# Relative tolerance: max |got - want| over max |want|, per array.
TOLERANCE = {"float32": 2e-5, "float64": 1e-11, "bfloat16": 2e-2}
GRAD_TOLERANCE = {"float32": 5e-5, "float64": 1e-11, "bfloat16": 4e-2}


class ScanInputs(NamedTuple):
    u: np.ndarray
    delta: np.ndarray
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray | None
    z: np.ndarray | None


def random_inputs(seed, b, l, d, n, *, with_D=True, with_z=True, dtype=np.float64) -> ScanInputs:
    """Inputs in the ranges a VMP layer sees: delta = softplus(normal), A = -exp(normal)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape)  # noqa: E731
    return ScanInputs(
        u=normal(b, l, d).astype(dtype),
        delta=np.log1p(np.exp(normal(b, l, d) - 1.0)).astype(dtype),
        A=(-np.exp(normal(d, n))).astype(dtype),
        B=normal(b, l, n).astype(dtype),
        C=normal(b, l, n).astype(dtype),
        D=normal(d).astype(dtype) if with_D else None,
        z=normal(b, l, d).astype(dtype) if with_z else None,
    )


def spec_loop(x: ScanInputs, *, reverse, mask_diagonal, residual) -> np.ndarray:
    """SPEC sections 1-3 as plain Python loops in float64, token by token."""
    u, delta, A, B, C = (np.asarray(v, np.float64) for v in x[:5])
    b, l, d = u.shape
    y = np.zeros((b, l, d))
    order = range(l - 1, -1, -1) if reverse else range(l)
    for i in range(b):
        h = np.zeros((d, A.shape[1]))
        r = np.zeros_like(h)
        for t in order:
            a_t = np.exp(delta[i, t][:, None] * A)
            bu_t = (delta[i, t] * u[i, t])[:, None] * B[i, t][None, :]
            h = a_t * h + (r if residual else 0.0) + bu_t
            if residual:
                r = r + a_t * bu_t
            y[i, t] = (h - bu_t if mask_diagonal else h) @ C[i, t]
    if x.D is not None:
        y = y + np.asarray(x.D, np.float64) * u
    if x.z is not None:
        z = np.asarray(x.z, np.float64)
        y = y * z / (1.0 + np.exp(-z))
    return y


def assert_close(got, want, tol, what=""):
    got = np.asarray(jnp.asarray(got, jnp.float32) if got.dtype == jnp.bfloat16 else got)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got.astype(np.float64) - want).max() / scale
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def assert_matches(args: dict, got, want, what: str) -> None:
    """(y, grads) computed from `args` equal the reference's (y, grads) within the tolerances
    of the arguments' dtype, and keep the arguments' dtypes and shapes."""
    (y, grads), (y_ref, grads_ref) = got, want
    dtype = args["u"].dtype
    name = jnp.dtype(dtype).name
    assert y.dtype == dtype and y.shape == args["u"].shape
    assert_close(y, y_ref, TOLERANCE[name], f"{what} y")
    assert grads.keys() == grads_ref.keys() == args.keys()
    for key in args:
        assert grads[key].dtype == args[key].dtype, key
        assert_close(grads[key], grads_ref[key], GRAD_TOLERANCE[name], f"{what} d{key}")


def scan_args(x: ScanInputs, dtype) -> dict:
    """The differentiable arguments of selective_scan as jax arrays of `dtype` (None dropped)."""
    return {k: jnp.asarray(v, dtype) for k, v in x._asdict().items() if v is not None}


def value_and_grads(fn, args: dict, cotangent, **options):
    """y and d(sum(cotangent * y))/d(every argument) for fn(**args, **options), compiled as one
    program, once per fn, options and shapes (the reference is shared by every algorithm
    checked at the same shapes and options)."""
    return _value_and_grads(fn, tuple(sorted(options.items())))(args, cotangent)


@functools.cache
def _value_and_grads(fn, options: tuple):
    return jax.jit(functools.partial(_traced_value_and_grads, fn, dict(options)))


def _traced_value_and_grads(fn, options: dict, args: dict, cotangent):
    def loss(a):
        y = fn(**a, **options)
        return jnp.sum(cotangent * y.astype(jnp.float32 if y.dtype == jnp.bfloat16 else y.dtype)), y

    (_, y), grads = jax.value_and_grad(loss, has_aux=True)(args)
    return y, grads


def sweep_value_and_grads(fn, args: dict, cotangent, **options) -> dict:
    """{OPTION_IDS entry: (y, grads)}: `value_and_grads` for each of the 8 option combinations
    (reverse, mask_diagonal, residual), compiled as one program once per fn, options and shapes
    (on this CPU, XLA compiles one program of the 8 scans 2-4x faster than 8 programs)."""
    return _sweep(fn, tuple(sorted(options.items())))(args, cotangent)


@functools.cache
def _sweep(fn, options: tuple):
    def run(args, cotangent):
        return {
            name: _traced_value_and_grads(
                fn, dict(options, reverse=r, mask_diagonal=m, residual=s), args, cotangent
            )
            for name, (r, m, s) in zip(OPTION_IDS, OPTION_COMBOS, strict=True)
        }

    return jax.jit(run)


def sweep_against_reference(fn, args: dict, cotangent, **options) -> tuple[dict, dict]:
    """`sweep_value_and_grads` of fn(**options) and of `reference`, on the same arguments."""
    from vmp_jax.ssm import selective_scan

    got = sweep_value_and_grads(fn, args, cotangent, **options)
    return got, sweep_value_and_grads(selective_scan, args, cotangent, algorithm="reference")


class SharedSweeps:
    """Sweeps shared by a group of tests: each test checks one option combination of a sweep
    computed once for its group (the first test's seed draws the inputs); every test of the
    group names that seed when it fails, and `VMP_TEST_SEED=<seed> pytest <test id>` recomputes
    the group's sweep from it."""

    def __init__(self):
        self._done: dict = {}

    def get(self, request, seed: int, group: tuple, compute):
        """compute(seed)'s result for `group`, computed on the group's first call."""
        if group not in self._done:
            self._done[group] = (seed, compute(seed))
        group_seed, result = self._done[group]
        request.node.vmp_seed = group_seed
        return result


def runs_here(algorithm: str) -> bool:
    """Whether `algorithm` runs on the default backend (`cpu` only on a CPU; whether its kernels
    built is not asked: a machine that cannot build them must fail, not lose the tests)."""
    from vmp_jax.ssm import api

    return api.ONLY_ON.get(algorithm, jax.default_backend()) == jax.default_backend()


def check_batch_sharded(algorithm: str, seed: int) -> str:
    """A custom kernel under `batch_sharded(mesh)` of the 8 test devices: each device scans its
    shard of the batch, and the value and the gradients (A's and D's summed over the devices)
    equal the unsharded ones. Returns the sharded program's lowered text."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vmp_jax.ssm import batch_sharded, selective_scan

    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))
    args = scan_args(random_inputs(seed, 8, 9, 4, 3), jnp.float32)
    cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=args["u"].shape), jnp.float32)
    options = dict(reverse=True, mask_diagonal=True, residual=True, algorithm=algorithm)
    y_ref, grads_ref = value_and_grads(selective_scan, args, cotangent, **options)

    def sharded(**a):
        with batch_sharded(mesh):
            return selective_scan(**a, **options)

    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    whole = NamedSharding(mesh, PartitionSpec())
    placed = {k: jax.device_put(v, batch if v.ndim == 3 else whole) for k, v in args.items()}
    y, grads = value_and_grads(sharded, placed, cotangent)
    assert_close(y, y_ref, TOLERANCE["float32"], "sharded y")
    for key in args:
        assert_close(grads[key], grads_ref[key], GRAD_TOLERANCE["float32"], f"sharded d{key}")
    return jax.jit(sharded).lower(**placed).as_text()
