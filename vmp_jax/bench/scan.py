"""`vmp bench-scan`: time and memory of every scan algorithm at VMP's token counts.

For each algorithm and length: forward ms, forward+backward ms (gradients w.r.t. all seven
inputs) and the compiled temp memory of forward+backward, each also as a ratio to
`sequential` from the same run. Times are the best of `repeats` interleaved rounds after one
warm-up (see `measure`).
"""

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vmp_jax.ssm import resolve_algorithm, selective_scan

# Tokens of a 224 px VMP: an image (1 + 196), 8 frames (1 + 8 * 196), 16 frames (1 + 16 * 196).
DEFAULT_LENGTHS = (197, 1569, 3137)
DEFAULT_ALGORITHMS = ("sequential", "associative", "chunked", "auto")


@dataclasses.dataclass(frozen=True)
class Options:
    """The scan options being measured; VMP's backward scan has all three on."""

    reverse: bool = True
    mask_diagonal: bool = True
    residual: bool = True


@dataclasses.dataclass
class Row:
    algorithm: str
    length: int
    fwd_ms: float | None
    fwd_bwd_ms: float | None
    temp_bytes: int
    note: str = ""


def _inputs(b, l, d, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)  # noqa: E731
    return (
        normal(b, l, d),
        jax.nn.softplus(normal(b, l, d) - 3.0),  # steps around Mamba's initial 1e-3..1e-1
        -jnp.exp(normal(d, n)).astype(jnp.float32),
        normal(b, l, n),
        normal(b, l, n),
        normal(d).astype(jnp.float32),
        normal(b, l, d),
    )


def _time_ms(fn, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return 1e3 * (time.perf_counter() - start)


@dataclasses.dataclass
class _Program:
    """One algorithm's compiled forward and forward+backward at one length."""

    label: str
    forward: object
    fwd_bwd: object
    temp_bytes: int
    runnable: bool


def _compile(algorithm, args, options: Options, max_temp_bytes: int) -> _Program:
    kwargs = {**dataclasses.asdict(options), "algorithm": algorithm}
    cotangent = jnp.ones_like(args[0], jnp.float32)

    def loss(*a):
        return jnp.sum(cotangent * selective_scan(*a, **kwargs).astype(jnp.float32))

    forward = jax.jit(lambda *a: selective_scan(*a, **kwargs)).lower(*args).compile()
    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))))).lower(*args).compile()
    temp = fwd_bwd.memory_analysis().temp_size_in_bytes
    label = algorithm if algorithm != "auto" else f"auto ({resolve_algorithm('auto')})"
    return _Program(label, forward, fwd_bwd, temp, temp <= max_temp_bytes)


def measure(algorithms, args, options: Options, repeats: int, max_temp_bytes: int) -> list[Row]:
    """Rows for one length. The programs are timed in interleaved rounds, each algorithm once a
    round, and each keeps its best round (as timeit reports): slow drifts of a shared machine
    then fall on every algorithm alike, so the ratios compare like with like. Programs whose
    forward+backward needs more than max_temp_bytes are compiled but not run."""
    programs = [_compile(name, args, options, max_temp_bytes) for name in algorithms]
    runnable = [p for p in programs if p.runnable]
    for p in runnable:  # warm-up
        _time_ms(p.forward, args), _time_ms(p.fwd_bwd, args)
    best = {id(p): [float("inf"), float("inf")] for p in runnable}
    for _ in range(repeats):
        for p in runnable:
            times = best[id(p)]
            times[0] = min(times[0], _time_ms(p.forward, args))
            times[1] = min(times[1], _time_ms(p.fwd_bwd, args))
    length = args[0].shape[1]
    return [
        Row(p.label, length, *best[id(p)], p.temp_bytes)
        if p.runnable
        else Row(
            p.label,
            length,
            None,
            None,
            p.temp_bytes,
            f"not run: needs {p.temp_bytes / 2**20:.1f} MiB temp",
        )
        for p in programs
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _ratio(value, base) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table; ratios are to `sequential` at the same length (lower is better)."""
    base = {r.length: r for r in rows if r.algorithm == "sequential"}
    lines = [
        "| algorithm | L | fwd ms | fwd / seq | fwd+bwd ms | fwd+bwd / seq "
        "| temp MiB | temp / seq |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = base.get(r.length)
        lines.append(
            f"| {r.algorithm} | {r.length} | {_ms(r.fwd_ms)} | {_ratio(r.fwd_ms, s and s.fwd_ms)} "
            f"| {_ms(r.fwd_bwd_ms)} | {_ratio(r.fwd_bwd_ms, s and s.fwd_bwd_ms)} "
            f"| {r.temp_bytes / 2**20:.1f} | {_ratio(r.temp_bytes, s and s.temp_bytes)} |"
            + (f" {r.note}" if r.note else "")
        )
    return "\n".join(lines)


def run(
    *,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    batch: int = 2,
    dim: int = 384,
    state: int = 16,
    dtype: str = "float32",
    options: Options = Options(),
    repeats: int = 7,
    max_temp_gib: float = 8.0,
    echo=print,
) -> list[Row]:
    """Measure every algorithm at every length; echo each row as it completes."""
    for name in algorithms:
        resolve_algorithm(name)  # unknown names fail before any work
    if "sequential" not in algorithms:
        echo("note: ratios need the sequential baseline; add it to --algorithms")
    device = jax.devices()[0]
    echo(
        f"selective_scan on {device.platform} ({device.device_kind}), jax {jax.__version__}: "
        f"batch {batch}, D {dim}, N {state}, {dtype}, {dataclasses.asdict(options)}"
    )
    rows = []
    for length in lengths:
        args = _inputs(batch, length, dim, state, jnp.dtype(dtype))
        for r in measure(algorithms, args, options, repeats, int(max_temp_gib * 2**30)):
            echo(f"  {r.algorithm} L={length}: fwd {_ms(r.fwd_ms)}, fwd+bwd {_ms(r.fwd_bwd_ms)} ms")
            rows.append(r)
    echo(format_table(rows))
    return rows


__all__ = ["DEFAULT_ALGORITHMS", "DEFAULT_LENGTHS", "Options", "Row", "run"]
