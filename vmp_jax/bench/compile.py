"""`vmp bench-compile`: how long the train step of a config takes to trace, lower and compile
with its blocks looped in Python and with them scanned (`model.scan_layers`), in one run.

The step is the one `vmp train` jits (`steps.abstract_train_step`), compiled ahead of time on
abstract arguments for this machine's devices: nothing is allocated or run, so VMP-M at 224 px
compiles on a laptop. Each layout is compiled `repeats` times in alternation, each keeping its
fastest (jax's in-memory caches are cleared before every compile).
"""

import dataclasses
import time

import jax

from vmp_jax import compile_cache
from vmp_jax.engine import steps
from vmp_jax.experiment import load_config

LAYOUTS = (("looped", False), ("scanned", True))


@dataclasses.dataclass(frozen=True)
class Row:
    layout: str
    trace_s: float
    lower_s: float
    compile_s: float
    temp_bytes: int

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.compile_s


def compile_once(config) -> Row:
    """Trace, lower and compile the config's train step once, timed per phase (jax's
    persistent compilation cache, if $JAX_COMPILATION_CACHE_DIR sets one, is off meanwhile:
    a program loaded from it would time the load, not the compile)."""
    jax.clear_caches()
    train_step, state, batch = steps.abstract_train_step(config)
    with compile_cache.cache_options(jax_enable_compilation_cache=False):
        start = time.perf_counter()
        traced = train_step.trace(state, batch)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
    temp = compiled.memory_analysis().temp_size_in_bytes
    layout = "scanned" if config.model.scan_layers else "looped"
    return Row(layout, traced_at - start, lowered_at - traced_at, done - lowered_at, temp)


def format_table(rows: list[Row]) -> str:
    """Markdown; "x looped" is the total time over the looped layout's (lower is better)."""
    looped = next((r.total_s for r in rows if r.layout == "looped"), None)
    lines = [
        "| layers | trace s | lower s | compile s | total s | x looped | temp GiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.total_s / looped:.2f}" if looped else "-"
        lines.append(
            f"| {r.layout} | {r.trace_s:.1f} | {r.lower_s:.1f} | {r.compile_s:.1f} | "
            f"{r.total_s:.1f} | {ratio} | {r.temp_bytes / 2**30:.2f} |"
        )
    return "\n".join(lines)


def run(config_path: str, overrides=(), *, batch: int | None = None, repeats: int = 1, echo=print):
    """Rows for the looped and the scanned layout of the config's train step."""
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    configs = {}
    for layout, scan in LAYOUTS:
        config = load_config(config_path, [*overrides, f"model.scan_layers={scan}"])
        if batch is not None:
            config.data.batch_size = batch
        configs[layout] = config
    m, d = configs["looped"].model, configs["looped"].data
    echo(
        f"train step of {config_path}: depth {m.depth}, width {m.embed_dim}, global batch "
        f"{d.batch_size} of {d.num_frames}x{d.img_size}px, {m.dtype}, remat {m.remat}, scan "
        f"{m.scan_algorithm}; {len(jax.devices())} x {jax.devices()[0].device_kind}, jax "
        f"{jax.__version__}"
    )
    best: dict[str, Row] = {}
    for _ in range(repeats):
        for layout, config in configs.items():
            row = compile_once(config)
            echo(f"  {layout}: {row.total_s:.1f} s")
            if layout not in best or row.total_s < best[layout].total_s:
                best[layout] = row
    rows = [best[layout] for layout, _ in LAYOUTS]
    echo(format_table(rows))
    return rows


__all__ = ["Row", "compile_once", "format_table", "run"]
