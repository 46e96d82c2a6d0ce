"""`vmp bench-scan`: time and memory of every scan algorithm at VMP's token counts.

For each algorithm and length: forward ms, forward+backward ms (gradients w.r.t. all seven
inputs) and the compiled temp memory of forward+backward, each also as a ratio to
`sequential` from the same run. Times are the best of `repeats` runs after one warm-up (as
timeit reports): on a shared machine the minimum is the most repeatable estimate of what the
program costs, where a median still carries other processes' noise.
"""

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vmp_jax.ssm import ALGORITHMS, resolve_algorithm, selective_scan

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


def _best_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def measure(algorithm, args, options: Options, repeats: int, max_temp_bytes: int) -> Row:
    """One row; timing is skipped when forward+backward would need more than max_temp_bytes."""
    kwargs = {**dataclasses.asdict(options), "algorithm": algorithm}
    forward = jax.jit(lambda *a: selective_scan(*a, **kwargs))
    cotangent = jnp.ones_like(args[0], jnp.float32)

    def loss(*a):
        return jnp.sum(cotangent * selective_scan(*a, **kwargs).astype(jnp.float32))

    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))))).lower(*args).compile()
    temp = fwd_bwd.memory_analysis().temp_size_in_bytes
    label = algorithm if algorithm != "auto" else f"auto ({resolve_algorithm('auto')})"
    length = args[0].shape[1]
    if temp > max_temp_bytes:
        note = f"not run: needs {temp / 2**20:.1f} MiB temp"
        return Row(label, length, None, None, temp, note)
    return Row(
        label, length, _best_ms(forward, args, repeats), _best_ms(fwd_bwd, args, repeats), temp
    )


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
    repeats: int = 5,
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
        for name in algorithms:
            rows.append(measure(name, args, options, repeats, int(max_temp_gib * 2**30)))
            r = rows[-1]
            echo(
                f"  {r.algorithm} L={length}: fwd {r.fwd_ms} ms, fwd+bwd {r.fwd_bwd_ms} ms {r.note}"
            )
    echo(format_table(rows))
    return rows


__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHMS", "DEFAULT_LENGTHS", "Options", "Row", "run"]
