"""`vmp bench-data`: training-pipeline throughput on 320p H.264 video, per worker count.

The videos are K400-like: 10 s at 30 fps, 428x320 (short side 320, as VideoMAE's resized
Kinetics), generated once with the synthetic motion renderer and cached. Each row times the
full training pipeline of a recipe config (segment sampling of the whole video, random resized
crop to 224, flip, RandAugment, normalisation, random erasing, repeated augmentation, mixup and
cutmix), after one warm-up batch that includes starting the worker processes.
"""

import os
import time
from collections.abc import Sequence

from vmp_jax.bench import DEFAULT_DATA_CONFIG
from vmp_jax.data import pipeline, sources, synthetic
from vmp_jax.experiment import load_config

VIDEO = dict(frames=300, height=320, width=428, fps=30)


def ensure_videos(folder: str, count: int) -> str:
    """The list file of `count` 320p videos under `folder`, written on first use."""
    per_class = -(-count // 2) + 1  # one of each class goes to val.txt
    listing = os.path.join(folder, "train.txt")
    if os.path.isfile(listing) and len(sources.read_list_file(listing, folder)) >= count:
        return listing
    spec = synthetic.Spec(folder, classes=2, videos_per_class=per_class, val_fraction=0.0, **VIDEO)
    print(f"writing {2 * per_class} videos of {VIDEO} to {folder} (once)")
    return synthetic.make_dataset(spec)["train"]


def measure(config, source, batches: int) -> tuple[float, float]:
    """(clips/s, seconds to the first batch) over `batches` batches after the first."""
    start = time.perf_counter()
    iterator = iter(pipeline.train_dataset(config, source))
    try:
        next(iterator)  # warm-up: starts the workers
        warm = time.perf_counter()
        clips = 0
        for _ in range(batches):
            clips += len(next(iterator)["video"])
        return clips / (time.perf_counter() - warm), warm - start
    finally:
        iterator.close()


def run(
    *,
    folder: str,
    workers: Sequence[int],
    batches: int,
    batch_size: int,
    config_path: str = str(DEFAULT_DATA_CONFIG),
    overrides: Sequence[str] = (),
    echo=print,
) -> list[tuple[int, float, float]]:
    listing = ensure_videos(folder, count=16)
    rows = []
    for n in workers:
        settings = [
            f"data.data_root={folder}",
            f"data.train_list={listing}",
            f"data.num_workers={n}",
            f"data.batch_size={batch_size}",
            *overrides,
        ]
        config = load_config(config_path, settings)
        source = sources.open_source(config.data, "train")
        clips_per_s, startup = measure(config, source, batches)
        rows.append((n, clips_per_s, startup))
    echo(format_table(rows, config))
    return rows


def format_table(rows, config) -> str:
    d = config.data
    lines = [
        f"train pipeline, {d.num_frames}x{d.img_size} clips from {VIDEO['width']}x"
        f"{VIDEO['height']} H.264 ({VIDEO['frames']} frames), sampling {d.sampling}, "
        f"RandAugment n={d.randaug_n} m={d.randaug_m}, repeated_aug {d.repeated_aug}, "
        f"mixup {d.mixup} / cutmix {d.cutmix}, erase {d.erase_prob}, batch {d.batch_size}, "
        f"{os.cpu_count()} cores",
        "",
        "| workers | clips/s | clips/s per worker | x 0 workers | first batch s |",
        "|---|---|---|---|---|",
    ]
    base = next((r[1] for r in rows if r[0] == 0), None)
    for n, rate, startup in rows:
        per = f"{rate / n:.1f}" if n else "-"
        ratio = f"{rate / base:.2f}" if base else "-"
        lines.append(f"| {n} | {rate:.1f} | {per} | {ratio} | {startup:.2f} |")
    return "\n".join(lines)
