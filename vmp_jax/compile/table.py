"""`vmp compile table`: per-device memory of each config's train step (every K400 recipe by
default; any config, classification or AVA detection) at the paper's per-device batch (256
clips over 16 GPUs: 16; the AVA recipes' global batch of 128 is 16 per device on 8), on H100
and A100 GPUs (1 and 8, with the config's mesh) or on TPU topologies (one host and several), and the
largest per-device batch that fits.

The largest batch is estimated from two compiles (at the batch and at twice it): a train
step's memory is a fixed part (weights, optimiser state) plus a part per clip, and the line
through the two points says where it crosses the memory jax may use. The part per clip (a
device's activations at a per-device batch) does not change with the number of devices or
hosts, so a config and target's further places (8 GPUs, several TPU hosts) take the first
place's and need one compile each, which gives their own fixed part (VMP-Ti, VMP-Ti f16 and
VMP-S on v5e, v5p and v6e: the same largest batch from 4 hosts' own two compiles).
"""

import dataclasses
import math

from vmp_jax.compile import targets, train
from vmp_jax.compile.tpu.targets import table_topologies
from vmp_jax.experiment import REPO_ROOT

PAPER_BATCH = 16  # 256 clips over 16 GPUs


@dataclasses.dataclass(frozen=True)
class Row:
    config: str
    target: str
    devices: int | str  # a GPU count, or a TPU topology
    figures: train.TrainFigures
    largest_batch: int | None  # estimated; None when not asked for or not compiled


def largest_batch(compile_train, config: str, target: str, devices, first, per_clip=None):
    """(the largest per-device batch whose step fits, bytes per clip): from the line through
    `first` and, where `per_clip` is not given, a second compile at twice its batch (where a
    TPU compile is refused for memory, libtpu's figure of what it needs is used); 0 and the
    given `per_clip` when a compile fails."""
    if first.per_device_bytes is None:
        return 0, per_clip
    b = first.per_device_batch
    if per_clip is None:
        second = compile_train(str(REPO_ROOT / config), [], target, devices, 2 * b)
        if second.per_device_bytes is None:
            return 0, None
        per_clip = (second.per_device_bytes - first.per_device_bytes) / b
    if per_clip <= 0:
        return 0, per_clip
    fixed = first.per_device_bytes - b * per_clip
    return max(0, math.floor((first.usable_bytes - fixed) / per_clip)), per_clip


def rows(
    configs,
    names,
    places,
    *,
    compile_train=train.compile_train,
    batch=PAPER_BATCH,
    estimate=True,
    echo=print,
):
    """Compiles every (config, target of `names`, place) with `compile_train(config,
    overrides, target, place, batch)`, a place being a GPU count or, per target, a TPU
    topology (`places` a callable from target to topologies), and yields a Row as each is
    done. With `estimate`, the first place of a config and target is compiled again at twice
    the batch; the others take its memory per clip (`largest_batch`)."""
    for config in configs:
        for target in names:
            per_clip = None
            for devices in places(target) if callable(places) else places:
                f = compile_train(str(REPO_ROOT / config), [], target, devices, batch)
                best = None
                if estimate:
                    best, per_clip = largest_batch(
                        compile_train, config, target, devices, f, per_clip
                    )
                row = Row(config, target, devices, f, best)
                echo(format_row(row))
                yield row


HEADER = (
    "| config | GPU | GPUs | scan | GiB per GPU at 16 | fits | largest batch per GPU |\n"
    "|---|---|---:|---|---:|---|---:|"
)
TPU_HEADER = (
    "| config | TPU | topology | scan | GiB per chip at 16 | fits | largest batch per chip |\n"
    "|---|---|---|---|---:|---|---:|"
)


def _gib(size: int) -> str:
    """GiB to one decimal, or to the first significant digit under 1 GiB (the demo's step
    needs MiB, which one decimal would print as 0.0)."""
    gib = size / 2**30
    return f"{gib:.1f}" if gib >= 1 else f"{gib:.1g}"


def format_row(r: Row) -> str:
    f = r.figures
    gib = "-" if f.per_device_bytes is None else _gib(f.per_device_bytes)
    fits = "yes" if f.fits else ("no" if f.per_device_bytes is not None else "does not compile")
    best = "-" if r.largest_batch is None else f"~{r.largest_batch}"
    name = r.config.removeprefix("configs/").removesuffix(".py")
    return f"| {name} | {r.target} | {r.devices} | {f.algorithm} | {gib} | {fits} | {best} |"


def print_table(
    configs, names, devices, hosts: int, *, compile_train=train.compile_train, estimate=True,
    echo=print,
) -> list[Row]:  # fmt: skip
    """The rows of every config on each target of `names`, GPU targets first (on each GPU
    count of `devices`, under HEADER), then TPU targets (one host and `hosts` hosts, under
    TPU_HEADER), each row echoed as it is done."""
    found = []
    gpus = [t for t in names if targets.family(t) == "gpu"]
    tpus = [t for t in names if targets.family(t) == "tpu"]
    for family, header, places in (
        (gpus, HEADER, devices),
        (tpus, TPU_HEADER, lambda t: table_topologies(t, hosts)),
    ):
        if family:
            echo(header)
            found += rows(
                configs, family, places, compile_train=compile_train, estimate=estimate, echo=echo
            )
    return found
