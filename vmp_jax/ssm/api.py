"""`selective_scan`: the public op of SPEC section 4, and the dispatcher over algorithms.

The XLA algorithms and the `cpu` kernels compute the same causal scan in the compute dtype
(float32, or float64 for float64 inputs) with no D skip and no gate. This module does what they
share: checks the inputs, casts, runs the reverse direction as the causal scan of the
time-reversed sequence (unless the algorithm walks backwards itself), adds the D skip, applies
the silu(z) gate and casts back to u's dtype. `pallas` fuses all of that into its kernels and
is called as it is.
"""

import contextlib
import contextvars
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

import cpu_kernels.selective_scan as cpu_kernels
import pallas_kernels.selective_scan as pallas
import pallas_kernels.selective_scan_tpu as pallas_tpu
from cpu_kernels import build as cpu_build
from pallas_kernels.blocks import DEFAULT_BLOCKS, TILED, ScanBlocks
from pallas_kernels.scan_chunk import VARIANTS
from vmp_jax.ssm import associative, chunked, reference, sequential
from vmp_jax.ssm.validation import check_inputs

ScanFn = Callable[..., jax.Array]


ALGORITHMS: dict[str, ScanFn] = {
    "reference": reference.scan,
    "sequential": sequential.scan,
    "associative": associative.scan,
    "chunked": chunked.scan,
    # The Pallas kernels: Triton's natively when tracing for a GPU, Mosaic's when tracing for
    # a TPU (`FUSED_BY_BACKEND`), Triton's in Pallas' interpreter elsewhere.
    "pallas": pallas.selective_scan,
    # The C++ kernels for CPUs (XLA FFI), built on first use; float32 only.
    "cpu": cpu_kernels.scan,
}

# Algorithms that take D, z and `reverse` themselves and return y in u's dtype.
FUSED = frozenset({"pallas"})
# Their versions for a backend other than the GPU's: the TPU's Mosaic kernels (natively when
# lowered for a TPU, in Pallas' interpreter when a CPU host runs them under compiling_for).
FUSED_BY_BACKEND = {("pallas", "tpu"): pallas_tpu.selective_scan}

# Algorithms that take `reverse` themselves; the others scan the time-flipped sequence.
NATIVE_REVERSE = frozenset({"chunked", "cpu"})

# Custom kernels, which XLA cannot partition: under `batch_sharded` they run per device.
KERNELS = frozenset({"pallas", "cpu"})

# Algorithms that run on one backend only, and those that take no float64.
ONLY_ON = {"cpu": "cpu"}
NO_FLOAT64 = frozenset({"pallas", "cpu"})

# What "auto" resolves to per backend.
# cpu: the fastest in forward and forward+backward in `vmp bench-scan` (benchmarks/RESULTS.md:
#   at (2, 1569, 384, 16) the `cpu` kernels' forward takes 1.2x (plain) and 1.5x (VMP's
#   options) the time of an exp over the same elements, and forward+backward is 11-12x faster
#   than `sequential`, the fastest XLA algorithm there).
# gpu: no GPU has timed these yet, so the choice is by static figures (`vmp compile`,
#   benchmarks/RESULTS.md): `pallas` is the algorithm whose VMP-Ti train step (batch 16 on
#   one H100) needs the least memory in both dtypes (bf16 8.9 GiB, float32 13.6; `chunked`
#   12.9 and 14.8; `sequential` over 100), and its kernels compile without spills at 25%
#   occupancy or more on H100 and A100.
# tpu: no TPU has timed these either; by static figures (`vmp compile train --config
#   configs/k400_vmp_ti_f8.py --target v5e --per-device-batch 16`, benchmarks/RESULTS.md):
#   with `pallas` (the TPU kernels) VMP-Ti's train step at 16 clips per chip on v5e:2x2 takes
#   11.8 GiB per chip and fits the chip's 16 GiB; with `chunked` it takes 18.0 GiB and does
#   not.
AUTO_BY_BACKEND: dict[str, str] = {
    "cpu": "cpu",
    "gpu": "pallas",
    "tpu": "pallas",
}
# Where AUTO_BY_BACKEND's choice cannot run (float64 inputs; on CPU, a machine that cannot
# build the kernels, `cpu_kernels.build.status()`), "auto" takes the best XLA algorithm there.
AUTO_FALLBACK: dict[str, str] = {
    "cpu": "sequential",
    "gpu": "chunked",
    "tpu": "chunked",
}


_TARGET = contextvars.ContextVar("vmp_scan_target_backend", default=None)
_TARGET_SMS = contextvars.ContextVar("vmp_scan_target_sms", default=None)


def target_backend() -> str:
    """The backend the scans are traced for: jax's default backend, unless `compiling_for`
    says otherwise. It decides what "auto" resolves to and whether the Pallas kernels run
    natively (on "gpu") or in Pallas' interpreter (slow: for tests on CPU)."""
    return _TARGET.get() or jax.default_backend()


def target_sm_count() -> int | None:
    """The SMs of the compile-only GPU `compiling_for` names; None otherwise, where the
    kernels look at jax's own GPU (pallas_kernels.selective_scan's `sm_count`)."""
    return _TARGET_SMS.get() if target_backend() == "gpu" else None


@contextlib.contextmanager
def compiling_for(backend: str, sm_count: int | None = None):
    """Trace scans for `backend` (a GPU of `sm_count` SMs) whatever jax's default backend is:
    `vmp compile` traces on a CPU-only jax for compile-only GPU or TPU
    devices. For "tpu", `pallas` takes the TPU kernels, which a CPU host runs in Pallas'
    interpreter (to check them) and which lower to Mosaic for TPU devices."""
    tokens = _TARGET.set(backend), _TARGET_SMS.set(sm_count)
    try:
        yield
    finally:
        _TARGET.reset(tokens[0])
        _TARGET_SMS.reset(tokens[1])


_BATCH_MESH = contextvars.ContextVar("vmp_scan_batch_mesh", default=None)


@contextlib.contextmanager
def batch_sharded(mesh):
    """Inside, the Pallas kernels run under `shard_map`, each device on its shard of the
    batch (split over every axis of `mesh`, as the train and eval steps split it). XLA cannot
    partition a custom kernel: without this it gathers the whole batch onto every device
    (VMP-Ti on 8 GPUs: 51.6 GiB per device instead of 8.9). The XLA algorithms partition
    themselves and are left alone."""
    token = _BATCH_MESH.set(mesh)
    try:
        yield
    finally:
        _BATCH_MESH.reset(token)


def _kernel_mesh(batch: int):
    """The mesh to shard the kernels' batch over, if one is set and divides the batch."""
    mesh = _BATCH_MESH.get()
    return mesh if mesh is not None and mesh.size > 1 and batch % mesh.size == 0 else None


def _per_device(run, mesh, u, delta, A, B, C, D, z):
    """`run` on each device's shard of the batch (b, ...) arrays; A and D replicated."""
    batch, whole = P(mesh.axis_names), P()
    arrays = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z}
    given = {k: v for k, v in arrays.items() if v is not None}
    specs = {k: whole if k in ("A", "D") else batch for k in given}

    def local(given):
        return run(**{**arrays, **given})

    per_device = jax.shard_map(
        local, mesh=mesh, in_specs=(specs,), out_specs=batch, check_vma=False
    )
    return per_device(given)


def resolve_algorithm(algorithm: str, backend: str | None = None, dtype=jnp.float32) -> str:
    """The concrete algorithm name for `algorithm`: "auto" resolved for `backend` (by default
    `target_backend()`) and inputs of `dtype`, as AUTO_BY_BACKEND and AUTO_FALLBACK say."""
    if algorithm == "auto":
        backend = backend or target_backend()
        choice = AUTO_BY_BACKEND.get(backend, "chunked")
        if _cannot_run(choice, backend, dtype) is None:
            return choice
        return AUTO_FALLBACK.get(backend, "chunked")
    if algorithm not in ALGORITHMS:
        valid = ", ".join(["auto", *ALGORITHMS])
        raise ValueError(f"selective_scan: unknown algorithm {algorithm!r}; valid: {valid}")
    return algorithm


def _cannot_run(algorithm: str, backend: str, dtype) -> str | None:
    """Why `algorithm` cannot scan inputs of `dtype` traced for `backend`, or None if it can."""
    if ONLY_ON.get(algorithm, backend) != backend:
        return f"it runs on {ONLY_ON[algorithm]} only, and the scan is traced for {backend}"
    if algorithm in NO_FLOAT64 and jnp.dtype(dtype) == jnp.float64:
        return "it takes no float64 inputs (use another algorithm under x64)"
    if algorithm == "cpu" and (reason := cpu_build.status()) is not None:
        return f"its kernels are unavailable here: {reason}"
    return None


def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    z: jax.Array | None = None,
    *,
    reverse: bool = False,
    mask_diagonal: bool = False,
    residual: bool = False,
    algorithm: str = "auto",
    blocks: ScanBlocks | None = None,
    variant: str = "sequential",
) -> jax.Array:
    """Selective SSM scan of one direction (SPEC sections 1-3).

    Args:
      u: (b, l, d) input after the causal conv and SiLU.
      delta: (b, l, d) positive step sizes (softplus applied).
      A: (d, n) strictly negative (A = -exp(A_log)).
      B, C: (b, l, n) input-dependent projections.
      D: optional (d,) skip weight: adds D * u.
      z: optional (b, l, d) gate: the output is multiplied by silu(z).
      reverse: scan from the last token to the first.
      mask_diagonal: drop each token's own term b_t u_t from its output (section 2).
      residual: the residual SSM of section 3.
      algorithm: "auto", or one of ALGORITHMS; all agree in value and gradient.
      blocks: the tiling of the algorithms in TILED (`ScanBlocks`; None: its defaults),
        checked for the algorithm used; the others have nothing to tile and ignore it.
      variant: how the Pallas kernels compute a chunk's states, one of VARIANTS
        ("sequential" or "associative"); the XLA algorithms have one way each.

    Returns:
      y: (b, l, d) in u's dtype. The state is carried in float32 whatever the input dtype.
    """
    u, delta, A, B, C = (jnp.asarray(x) for x in (u, delta, A, B, C))
    D = None if D is None else jnp.asarray(D)
    z = None if z is None else jnp.asarray(z)
    check_inputs(u, delta, A, B, C, D, z)
    compute = jnp.result_type(u, delta, A, B, C, jnp.float32)
    resolved = resolve_algorithm(algorithm, dtype=compute)
    if algorithm != "auto" and (reason := _cannot_run(resolved, target_backend(), compute)):
        raise ValueError(f"selective_scan: algorithm {resolved!r} cannot scan here: {reason}")
    target = target_backend()
    blocks = (blocks or DEFAULT_BLOCKS).validate(resolved, target)
    if (resolved, target) == ("pallas", "tpu"):
        pallas_tpu.check_blocks(blocks)
    if variant not in VARIANTS:
        raise ValueError(f"selective_scan: unknown variant {variant!r}; valid: {VARIANTS}")
    return _selective_scan(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        reverse=bool(reverse),
        mask_diagonal=bool(mask_diagonal),
        residual=bool(residual),
        algorithm=resolved,
        blocks=blocks if resolved in TILED else None,  # one compile per untiled algorithm
        variant=variant,
        target=target if resolved in FUSED else None,
        sm_count=target_sm_count() if resolved in FUSED else None,
        mesh=_kernel_mesh(u.shape[0]) if resolved in KERNELS else None,
    )


STATIC = (
    "reverse",
    "mask_diagonal",
    "residual",
    "algorithm",
    "blocks",
    "variant",
    "target",
    "sm_count",
    "mesh",
)


@partial(jax.jit, static_argnames=STATIC)
def _selective_scan(u, delta, A, B, C, D, z, *, mesh, **static):
    run = partial(_scan, **static)
    if mesh is not None:
        return _per_device(run, mesh, u, delta, A, B, C, D, z)
    return run(u, delta, A, B, C, D, z)


def _scan(
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    *,
    reverse,
    mask_diagonal,
    residual,
    algorithm,
    blocks,
    variant,
    target,
    sm_count,
):
    """One algorithm's scan with the D skip and the gate: (b, l, d) -> (b, l, d) in u's dtype."""
    options = {"mask_diagonal": mask_diagonal, "residual": residual}
    if algorithm in TILED:
        options["blocks"] = blocks
    if (algorithm, target) in FUSED_BY_BACKEND:
        fused = FUSED_BY_BACKEND[algorithm, target]
        return fused(u, delta, A, B, C, D, z, reverse=reverse, variant=variant, **options)
    if algorithm in FUSED:
        return ALGORITHMS[algorithm](
            u,
            delta,
            A,
            B,
            C,
            D,
            z,
            reverse=reverse,
            variant=variant,
            interpret=target != "gpu",
            sm_count=sm_count,
            **options,
        )
    compute = jnp.result_type(u, delta, A, B, C, jnp.float32)
    uc, delta, A, B, C = (x.astype(compute) for x in (u, delta, A, B, C))
    if algorithm in NATIVE_REVERSE:
        y = ALGORITHMS[algorithm](uc, delta, A, B, C, reverse=reverse, **options)
    elif reverse:
        flipped = (jnp.flip(x, axis=1) for x in (uc, delta, B, C))
        su, sdelta, sB, sC = flipped
        y = jnp.flip(ALGORITHMS[algorithm](su, sdelta, A, sB, sC, **options), axis=1)
    else:
        y = ALGORITHMS[algorithm](uc, delta, A, B, C, **options)
    if D is not None:
        y = y + D.astype(compute) * uc
    if z is not None:
        y = y * jax.nn.silu(z.astype(compute))
    return y.astype(u.dtype)
