"""`vmp bench-scan`: time and memory of every scan algorithm at VMP's token counts.

For each algorithm and length: forward ms, forward+backward ms (gradients w.r.t. all seven
inputs) and the compiled temp memory of forward+backward. Measured in the same run, each
forward is set against two floors:
- the exp floor: an exp of delta A and a sum over the same (batch, L, D, N) elements, the
  least work any scan must do (timed in the same interleaved rounds as the algorithms);
- the memory-bandwidth floor: the bytes of u, delta, B, C and z read once and y written once,
  at the copy bandwidth.
Times are also given as speed-ups over the best XLA algorithm (sequential, associative,
chunked) at that length. Times are the best of `repeats` interleaved rounds after one warm-up
(see `measure`).

Besides the algorithm names, "pallas:sequential" and "pallas:associative" name the Pallas
kernels' two chunk variants (`selective_scan(..., algorithm="pallas", variant=...)`; in Pallas'
interpreter off the GPU), and "pallas:<variant>:<g>" the same cut into g segments (1: the
sequence unsplit; pallas_kernels/segments.py). `blocks` sets the tiling of `chunked` and
`pallas`.
"""

import dataclasses
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cpu_kernels import build as cpu_build
from vmp_jax.bench import DEFAULT_LENGTHS
from vmp_jax.ssm import VARIANTS, ScanBlocks, resolve_algorithm, selective_scan

XLA_ALGORITHMS = ("sequential", "associative", "chunked")
PALLAS_VARIANTS = tuple(f"pallas:{v}" for v in VARIANTS)
UNSPLIT = "pallas:sequential:1"  # on a GPU: what the segments buy, in the same run


def default_algorithms(backend: str | None = None) -> tuple[str, ...]:
    """The XLA algorithms, the backend's kernels and auto: on CPU the C++ kernels (where they
    can be built), on GPU both Pallas variants and the unsplit kernels (the interpreter that
    runs them elsewhere is far too slow at these lengths)."""
    backend = backend or jax.default_backend()
    if backend == "gpu":
        return (*XLA_ALGORITHMS, "auto", *PALLAS_VARIANTS, UNSPLIT)
    cpu = ("cpu",) if backend == "cpu" and cpu_build.status() is None else ()
    return (*XLA_ALGORITHMS, *cpu, "auto")


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
    floor_ms: float = 0.0  # forward's memory-bandwidth floor at this length
    exp_ms: float = 0.0  # exp and sum over the same elements, in the same rounds
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


def scan_options(name: str) -> dict:
    """selective_scan's algorithm, variant and segments (None: the blocks') for a row's name:
    an algorithm, "pallas:<variant>" or "pallas:<variant>:<segments>". Unknown names fail
    here, before any work."""
    algorithm, _, rest = name.partition(":")
    variant, _, segments = rest.partition(":")
    if rest and (algorithm != "pallas" or variant not in VARIANTS or not _count(segments)):
        valid = ", ".join(PALLAS_VARIANTS)
        raise ValueError(
            f"unknown scan {name!r}; valid: {valid} (optionally :<segments>), or an algorithm"
        )
    resolve_algorithm(algorithm)
    return {
        "algorithm": algorithm,
        "variant": variant or "sequential",
        "segments": int(segments) if segments else None,
    }


def _count(text: str) -> bool:
    """'' or a positive integer."""
    return not text or (text.isdigit() and int(text) >= 1)


def _blocks(blocks: ScanBlocks | None, segments: int | None) -> ScanBlocks:
    """A row's blocks: `blocks` (or the defaults) with the segments its name gives."""
    blocks = blocks or ScanBlocks()
    return dataclasses.replace(blocks, segments=segments) if segments else blocks


def _label(name: str) -> str:
    return f"auto ({resolve_algorithm('auto')})" if name == "auto" else name


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


def _compile(algorithm, args, options: Options, blocks, max_temp_bytes: int) -> _Program:
    tunables = scan_options(algorithm)
    blocks = _blocks(blocks, tunables.pop("segments"))
    scan = partial(selective_scan, blocks=blocks, **tunables, **dataclasses.asdict(options))
    cotangent = jnp.ones_like(args[0], jnp.float32)

    def loss(*a):
        return jnp.sum(cotangent * scan(*a).astype(jnp.float32))

    forward = jax.jit(scan).lower(*args).compile()
    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))))).lower(*args).compile()
    temp = fwd_bwd.memory_analysis().temp_size_in_bytes
    return _Program(_label(algorithm), forward, fwd_bwd, temp, temp <= max_temp_bytes)


def exp_floor(delta, A) -> object:
    """The compiled exp floor of a length's delta (b, l, d) and A (d, n): sum(exp(delta A))
    over the (b, l, d, n) elements; call it with (delta, A)."""
    floor = jax.jit(lambda delta, A: jnp.sum(jnp.exp(delta.astype(jnp.float32)[..., None] * A)))
    return floor.lower(delta, A).compile()


def copy_bandwidth(nbytes: int = 2**28, repeats: int = 10) -> float:
    """Device memory bandwidth in bytes/s of an elementwise copy (read nbytes, write nbytes)."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    negate = jax.jit(jnp.negative).lower(x).compile()
    jax.block_until_ready(negate(x))
    best = min(_time_ms(negate, (x,)) for _ in range(repeats))
    return 2 * nbytes / (best / 1e3)


def forward_bytes(args) -> int:
    """Bytes the forward must move at least: u, delta, B, C, z read once and y written once."""
    u, delta, _, B, C, _, z = args
    return sum(x.nbytes for x in (u, delta, B, C, z)) + u.nbytes


def measure(
    algorithms,
    args,
    options: Options,
    repeats: int,
    max_temp_bytes: int,
    floor_ms: float = 0.0,
    blocks: ScanBlocks | None = None,
) -> list[Row]:
    """Rows for one length. The programs, and the exp floor, are timed in interleaved rounds,
    each once a round, and each keeps its best round (as timeit reports): slow drifts of a
    shared machine then fall on every program alike, so the ratios compare like with like.
    Programs whose forward+backward needs more than max_temp_bytes are compiled but not run."""
    programs = [_compile(name, args, options, blocks, max_temp_bytes) for name in algorithms]
    runnable = [p for p in programs if p.runnable]
    floor_args = args[1:3]  # (delta, A)
    floor = exp_floor(*floor_args)
    _time_ms(floor, floor_args)
    for p in runnable:  # warm-up
        _time_ms(p.forward, args), _time_ms(p.fwd_bwd, args)
    best = {id(p): [float("inf"), float("inf")] for p in runnable}
    exp_ms = float("inf")
    for _ in range(repeats):
        exp_ms = min(exp_ms, _time_ms(floor, floor_args))
        for p in runnable:
            times = best[id(p)]
            times[0] = min(times[0], _time_ms(p.forward, args))
            times[1] = min(times[1], _time_ms(p.fwd_bwd, args))
    length = args[0].shape[1]
    return [
        Row(p.label, length, *best[id(p)], p.temp_bytes, floor_ms, exp_ms)
        if p.runnable
        else Row(
            p.label,
            length,
            None,
            None,
            p.temp_bytes,
            floor_ms,
            exp_ms,
            f"not run: needs {p.temp_bytes / 2**20:.1f} MiB temp",
        )
        for p in programs
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _ratio(value, base) -> str:
    """value / base to 3 significant figures (a small positive ratio never prints as 0)."""
    return "-" if value is None or not base else f"{value / base:.3g}"


def _best_xla(rows: Sequence[Row], field: str) -> dict[int, float]:
    """Per length, the least time of the XLA algorithms' rows."""
    best: dict[int, float] = {}
    for r in rows:
        value = getattr(r, field)
        if r.algorithm in XLA_ALGORITHMS and value is not None:
            best[r.length] = min(best.get(r.length, value), value)
    return best


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table. "x XLA" is the speed-up over the fastest of the XLA algorithms at the
    same length (higher is better), "fwd / exp" the forward's time over the exp floor's and
    "fwd % bw" its bandwidth floor over its time (how near the forward is to each floor),
    "temp / seq" the temp memory relative to `sequential` (lower is better)."""
    seq = {r.length: r for r in rows if r.algorithm == "sequential"}
    fwd, fwd_bwd = _best_xla(rows, "fwd_ms"), _best_xla(rows, "fwd_bwd_ms")
    lines = [
        "| algorithm | L | fwd ms | fwd x XLA | fwd / exp | fwd % bw | fwd+bwd ms "
        "| fwd+bwd x XLA | temp MiB | temp / seq |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bandwidth = _ratio(r.floor_ms * 100, r.fwd_ms) if r.floor_ms else "-"
        s = seq.get(r.length)
        lines.append(
            f"| {r.algorithm} | {r.length} | {_ms(r.fwd_ms)} "
            f"| {_ratio(fwd.get(r.length), r.fwd_ms)} | {_ratio(r.fwd_ms, r.exp_ms)} "
            f"| {bandwidth} | {_ms(r.fwd_bwd_ms)} "
            f"| {_ratio(fwd_bwd.get(r.length), r.fwd_bwd_ms)} "
            f"| {r.temp_bytes / 2**20:.1f} | {_ratio(r.temp_bytes, s and s.temp_bytes)} |"
            + (f" {r.note}" if r.note else "")
        )
    return "\n".join(lines)


def run(
    *,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    algorithms: Sequence[str] | None = None,
    batch: int = 2,
    dim: int = 384,
    state: int = 16,
    dtype: str = "float32",
    options: Options = Options(),
    blocks: ScanBlocks | None = None,
    repeats: int = 7,
    max_temp_gib: float = 8.0,
    echo=print,
) -> list[Row]:
    """Measure every algorithm at every length; echo each row as it completes."""
    algorithms = tuple(algorithms or default_algorithms())
    for name in algorithms:  # unknown names and block sizes an algorithm cannot take fail
        tunables = scan_options(name)  # here, before any work
        _blocks(blocks, tunables["segments"]).validate(resolve_algorithm(tunables["algorithm"]))
    if not set(algorithms) & set(XLA_ALGORITHMS):
        echo("note: the x XLA speed-ups need at least one of " + ", ".join(XLA_ALGORITHMS))
    device = jax.devices()[0]
    bandwidth = copy_bandwidth()
    echo(
        f"selective_scan on {device.platform} ({device.device_kind}), jax {jax.__version__}: "
        f"batch {batch}, D {dim}, N {state}, {dtype}, {dataclasses.asdict(options)}, "
        f"{blocks or ScanBlocks()}; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    rows = []
    for length in lengths:
        args = _inputs(batch, length, dim, state, jnp.dtype(dtype))
        floor_ms = 1e3 * forward_bytes(args) / bandwidth
        limit = int(max_temp_gib * 2**30)
        measured = measure(algorithms, args, options, repeats, limit, floor_ms, blocks)
        echo(f"  exp floor L={length}: {_ms(measured[0].exp_ms)} ms")
        for r in measured:
            echo(f"  {r.algorithm} L={length}: fwd {_ms(r.fwd_ms)}, fwd+bwd {_ms(r.fwd_bwd_ms)} ms")
            rows.append(r)
    echo(format_table(rows))
    return rows


__all__ = [
    "DEFAULT_LENGTHS",
    "PALLAS_VARIANTS",
    "XLA_ALGORITHMS",
    "Options",
    "Row",
    "copy_bandwidth",
    "default_algorithms",
    "exp_floor",
    "forward_bytes",
    "run",
    "scan_options",
]
