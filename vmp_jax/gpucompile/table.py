"""`vmp gpu-compile table`: per-device memory of every K400 recipe's train step on H100 and
A100 GPUs, at the paper's per-GPU batch (256 clips over 16 GPUs: 16), on 1 and on 8 GPUs with
the config's mesh, and the largest per-device batch that fits.

The largest batch is estimated from two compiles (at the batch and at twice it): a train
step's memory is a fixed part (weights, optimiser state) plus a part per clip, and the line
through the two points says where it crosses the memory jax may use.
"""

import dataclasses
import math

from vmp_jax.experiment import REPO_ROOT
from vmp_jax.gpucompile import train

SIZES, FRAMES, KINDS = ("ti", "s", "m"), (8, 16), ("vm", "vmp")
K400_CONFIGS = [
    f"configs/k400_{kind}_{size}_f{frames}.py"
    for size in SIZES
    for frames in FRAMES
    for kind in KINDS
]
PAPER_BATCH = 16  # 256 clips over 16 GPUs


@dataclasses.dataclass(frozen=True)
class Row:
    config: str
    target: str
    devices: int
    figures: train.TrainFigures
    largest_batch: int | None  # estimated; None when not asked for or not compiled


def largest_batch(config: str, target: str, devices: int, first: train.TrainFigures) -> int:
    """The largest per-device batch whose step fits, from the line through two compiles."""
    if not first.compiled:
        return 0
    b = first.per_device_batch
    second = train.compile_train(str(REPO_ROOT / config), [], target, devices, 2 * b)
    if not second.compiled:
        return 0
    per_clip = (second.per_device_bytes - first.per_device_bytes) / b
    fixed = first.per_device_bytes - b * per_clip
    return max(0, math.floor((first.usable_bytes - fixed) / per_clip)) if per_clip > 0 else 0


def rows(configs, targets, device_counts, *, batch=PAPER_BATCH, estimate=True, echo=print):
    """Compiles every (config, target, devices) and yields a Row as each is done."""
    for config in configs:
        for target in targets:
            for devices in device_counts:
                f = train.compile_train(str(REPO_ROOT / config), [], target, devices, batch)
                best = largest_batch(config, target, devices, f) if estimate else None
                row = Row(config, target, devices, f, best)
                echo(format_row(row))
                yield row


HEADER = (
    "| config | GPU | GPUs | scan | GiB per GPU at 16 | fits | largest batch per GPU |\n"
    "|---|---|---:|---|---:|---|---:|"
)


def _gib(size: int) -> str:
    """GiB to one decimal, or to the first significant digit under 1 GiB (the demo's step
    needs MiB, which one decimal would print as 0.0)."""
    gib = size / 2**30
    return f"{gib:.1f}" if gib >= 1 else f"{gib:.1g}"


def format_row(r: Row) -> str:
    f = r.figures
    gib = "-" if f.per_device_bytes is None else _gib(f.per_device_bytes)
    fits = "yes" if f.fits else ("no" if f.compiled else "does not compile")
    best = "-" if r.largest_batch is None else f"~{r.largest_batch}"
    name = r.config.removeprefix("configs/").removesuffix(".py")
    return f"| {name} | {r.target} | {r.devices} | {f.algorithm} | {gib} | {fits} | {best} |"
