"""`vmp bench-data`: training-pipeline throughput per source (video files, the frame store).

The videos are a folder of the user's (`--videos DIR`) or, by default, K400-like ones: 10 s at
30 fps, 428x320 (short side 320, as VideoMAE's resized Kinetics), libx264's defaults (B-frames,
250-frame GOPs), generated once with the synthetic motion renderer and cached. The frame store
is packed from the same videos once (`vmp make-frames` defaults: short side 320, JPEG q90).

Two tables, every figure measured in the same run:
- per source and worker count, the recipe's whole training pipeline (the Grain pipeline that
  `vmp train` reads: segment sampling over the whole video, random resized crop, flip,
  RandAugment, normalisation, erasing, repeated augmentation, batching and the workers'
  hand-off) once started (`measure`): clips/s, and clips per CPU-second of this process
  and its workers ("per core"), with the ratio to video files with host augmentation at the
  same worker count, for `data.augment_on` host and device (the loader's part: the step's part
  follows);
- per source, one process, the loader's own stages without Grain (no batching, threads or
  workers): where a clip's CPU time goes: read (file or records), decode (video or JPEG), crop
  (crop and resize, what stays on the host when augmenting on the device) and augment (the
  host's flip, RandAugment, normalisation and erasing); and the step's augmentation
  (data.augment_on=device) jitted on this machine's JAX device, per clip.
"""

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np

from vmp_jax.bench import DEFAULT_DATA_CONFIG, bucket
from vmp_jax.data import (
    decode,
    device_augment,
    frame_packing,
    frame_store,
    listing,
    pipeline,
    resample,
    sources,
    synthetic,
)
from vmp_jax.experiment import load_config

VIDEO = dict(frames=300, height=320, width=428, fps=30)
SOURCES = ("video", "frames")
# (source, data.augment_on) of each row, video files with host augmentation (today's path) first.
VARIANTS = (("video", "host"), ("frames", "host"), ("video", "device"), ("frames", "device"))
# The rows' list: the videos listed this often over, as long as a dataset's (`Listed`).
LISTED = 4096


@dataclasses.dataclass(frozen=True)
class Listed:
    """A source's videos listed over and over, `length` entries in all: the training pipeline's
    list as long as a real dataset's. Grain's per-epoch shuffle (index_shuffle, which cycle-walks
    a larger domain) costs about 1 ms per element on a list of 16 against 8 us on 4,096 and 4 us
    on Kinetics-400's 240,000: on the 16 videos themselves, a tenth of a frame-store clip's CPU
    time that no real run spends."""

    source: Sequence
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.source[index % len(self.source)]

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """A frame store's (the default canvas, `resample.canvas_of`)."""
        return getattr(self.source, "frame_size", None)


def ensure_videos(folder: str, count: int) -> str:
    """The list file of `count` 320p videos under `folder`, written on first use."""
    per_class = -(-count // 2) + 1  # one of each class goes to val.txt
    listing_file = os.path.join(folder, "train.txt")
    if os.path.isfile(listing_file) and len(sources.read_list_file(listing_file, folder)) >= count:
        return listing_file
    spec = synthetic.Spec(folder, classes=2, videos_per_class=per_class, val_fraction=0.0, **VIDEO)
    print(f"writing {2 * per_class} videos of {VIDEO} to {folder} (once)")
    return synthetic.make_dataset(spec)["train"]


def user_videos(folder: str) -> list[listing.VideoFile]:
    """Every video file under `folder` (any depth), sorted, as label-0 items."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(listing.VIDEO_EXTENSIONS):
                path = os.path.join(root, name)
                found.append(listing.VideoFile(path, 0, os.path.relpath(path, folder)))
    if not found:
        raise FileNotFoundError(f"no videos under {folder} (extensions {listing.VIDEO_EXTENSIONS})")
    return sorted(found, key=lambda v: v.path)


def ensure_store(videos: list, folder: str, echo=print) -> frame_store.FrameStore:
    """The frame store of `videos` under `folder`, packed on first use."""
    if not os.path.isfile(os.path.join(folder, frame_store.STORE_FILE)):
        echo(f"packing {len(videos)} videos into the frame store {folder} (once)")
        frame_packing.pack(videos, folder, frame_packing.Settings())
    return frame_store.open_store(folder)


def cpu_seconds() -> float:
    """CPU time of this process and its live child processes (the loader's workers)."""
    total = time.process_time()
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return total
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


@dataclasses.dataclass(frozen=True)
class Row:
    source: str
    augment_on: str
    workers: int
    clips_per_s: float
    clips_per_s_per_core: float
    first_batch_s: float
    x_video: float | None = None  # clips/s over video files' at the same worker count


# More than the batches a worker holds in flight (its 2 reader threads', the one it is handing
# over, its queue's, and the training process's buffer's and the thread's filling it).
IN_FLIGHT = 8


def measure(config, source, batches: int) -> tuple[float, float, float]:
    """(clips/s, clips per CPU-second, seconds to the first batch) over `batches` batches once
    the pipeline has started, which the timing would otherwise count against the clips: a
    first batch per worker (one without workers; the workers' batches come in turn, so each
    has imported and opened the store), then every buffer left to fill (`settle`), which makes
    each batch slot the pipeline will hold in flight (`batch_memory`: once per run, about 6 a
    worker, a batch's worth of fresh pages each: 26 MB, 10-15 ms of CPU on the CI-sized VM),
    and emptied again (`IN_FLIGHT` batches per process taken), so that the timed batches are
    made while they are timed. Started once the row before has finished its work (`settle`)."""
    settle()
    start = time.perf_counter()
    iterator = iter(pipeline.train_dataset(config, source))
    try:
        next(iterator)  # starts the workers
        first = time.perf_counter() - start
        for _ in range(config.data.num_workers - 1):
            next(iterator)
        settle()  # every buffer full: the slots of every batch in flight made
        for _ in range(IN_FLIGHT * max(1, config.data.num_workers)):
            next(iterator)
        warm, cpu = time.perf_counter(), cpu_seconds()
        clips = 0
        for _ in range(batches):
            clips += len(next(iterator)["video"])
        wall, cpu = time.perf_counter() - warm, cpu_seconds() - cpu
        return clips / wall, clips / max(cpu, 1e-9), first
    finally:
        iterator.close()


def settle(interval: float = 0.2, timeout: float = 20.0) -> None:
    """Waits until this process and its workers spend next to no CPU over `interval` seconds:
    a row's iterator, once closed, still finishes the batches its threads had begun (a video
    row's, a quarter of a CPU-second), which the next row would otherwise be charged with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds()
        time.sleep(interval)
        if cpu_seconds() - before <= 0.02 * interval:
            return


def breakdown(
    item, s: pipeline.ClipSettings, clips: int, seed: int = 0, selective: bool = True
) -> dict[str, float]:
    """CPU ms per clip of read, decode, crop (and resize) and augment, the host's steps with
    data.augment_on=host, and of "onto canvas", what follows the read with data.augment_on=
    device: the frames decoded onto the canvas (a frame store's straight into it, as
    `pipeline.frames_on_canvas` does; a video's decode and then the copy) and the crop plans;
    over `clips` clips of one item, in this process (`repeated_aug` clips share a read and a
    decode, as in the pipeline). selective: False decodes video files as before frames were
    skipped (`decode.read_frames`); after one untimed read, and once the rows' threads are done
    (`settle`: the process's CPU time counts every thread's)."""
    settle()
    rng = np.random.default_rng(seed)
    # Untimed, as the rows' first batch: opens the store's shards (once per process) or the file.
    item.read(pipeline.train_plan(s, np.random.default_rng(seed + 1)))
    spent = dict.fromkeys(("read", "decode", "crop", "augment", "onto canvas"), 0.0)
    reads = max(1, clips // s.repeated_aug)
    for _ in range(reads):
        plan = pipeline.train_plan(s, rng)
        t0 = time.process_time()
        if isinstance(item, frame_store.StoredVideo):
            indices = decode.plan_indices(plan, item.num_frames)
            records = item.read_records(indices)
            t1 = time.process_time()
            frames = item.decode_onto(indices, *records, (item.height, item.width))
        else:
            with open(item.path, "rb") as f:
                data = f.read()
            t1 = time.process_time()
            frames = decode.read_frames(data, plan, name=item.name, selective=selective)[0]
        t2 = time.process_time()
        cropped = [pipeline.crop_clip(c, s, rng) for c in np.split(frames, s.repeated_aug)]
        t3 = time.process_time()
        for clip in cropped:
            pipeline.augment_clip(clip, s, rng)
        t4 = time.process_time()
        decoded = 0.0  # the video's decode, which the device path needs as well
        if isinstance(item, frame_store.StoredVideo):
            item.decode_onto(indices, *records, s.canvas)
            h, w = item.height, item.width
        else:
            _, h, w = pipeline.on_canvas(frames, s.canvas)
            decoded = t2 - t1
        for _ in cropped:
            resample.crop_plan(pipeline.crop_box(h, w, s, rng), s.img_size, s.canvas)
        t5 = time.process_time()
        steps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4 + decoded)
        for key, dt in zip(spent, steps, strict=True):
            spent[key] += dt
    return {k: 1000 * v / (reads * s.repeated_aug) for k, v in spent.items()}


def run(
    *,
    folder: str,
    workers: Sequence[int],
    batches: int,
    batch_size: int,
    videos: str | None = None,
    config_path: str = str(DEFAULT_DATA_CONFIG),
    overrides: Sequence[str] = (),
    bucket_clips: int = 0,
    echo=print,
) -> dict:
    """Times each source; prints both tables; returns {"rows": [...], "breakdown": [...]}.
    With bucket_clips, instead counts the requests and bytes of that many clips per source
    read from an emulated bucket (`bench.bucket`); returns {"bucket": [...]}."""
    if bucket_clips:
        bucket.emulator_class()  # what to install, before any work, if the dev extra is missing
    if videos:
        items = user_videos(videos)
        store_dir = os.path.join(folder, f"frames-{os.path.basename(os.path.abspath(videos))}")
    else:
        listed = ensure_videos(folder, count=16)
        items, store_dir = sources.read_list_file(listed, folder), os.path.join(folder, "frames")
    by_source = {"video": items, "frames": ensure_store(items, store_dir, echo)}
    config = load_config(config_path, list(overrides))
    frame_store.check_fits(by_source["frames"], config.data)
    if bucket_clips:
        s = pipeline.ClipSettings.from_config(config, by_source["frames"])
        counted = bucket.run(items, store_dir, s, bucket_clips, echo)
        echo(bucket.format_table(counted))
        return {"bucket": [dataclasses.asdict(r) for r in counted]}
    rows, spent = [], []
    for n in workers:
        for name, where in VARIANTS:
            settings = [f"data.num_workers={n}", f"data.batch_size={batch_size}", *overrides]
            config = load_config(config_path, [*settings, f"data.augment_on={where}"])
            listed = Listed(by_source[name], max(LISTED, len(by_source[name])))
            rate, per_core, startup = measure(config, listed, batches)
            video = next((r.clips_per_s for r in rows if r.workers == n), None)
            ratio = rate / video if video else None
            rows.append(Row(name, where, n, rate, per_core, startup, ratio))
    s = pipeline.ClipSettings.from_config(config, by_source["frames"])
    clips = 4 * batch_size
    for name in SOURCES:
        spent.append({"source": name} | breakdown(by_source[name][0], s, clips))
    # The decoder as it was before it skipped frames: the same frames, every one decoded.
    full = breakdown(items[0], s, clips, selective=False)
    spent.append({"source": "video, full decode"} | full)
    device_ms = device_augment_ms(config, s, batch_size)
    echo(format_tables(rows, spent, device_ms, config, videos))
    result = {"rows": [dataclasses.asdict(r) for r in rows], "breakdown": spent}
    return result | {"device_augment_ms_per_clip": device_ms}


def device_augment_ms(config, s: pipeline.ClipSettings, batch: int, repeats: int = 3) -> float:
    """Wall ms per clip of the train step's crop, resize and augmentation (data.augment_on=
    device), jitted, on this machine's default JAX device, over batches of `batch` clips."""
    import jax

    augment = device_augment.DeviceAugment.for_config(config)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (batch, s.num_frames, *s.canvas, 3), np.uint8)
    plans = [resample.crop_plan(pipeline.crop_box(*s.canvas, s, rng), s.img_size, s.canvas)]
    plan = {k: np.stack([plans[0][k]] * batch) for k in resample.PLAN_KEYS}
    run = jax.jit(augment)
    run(video, 0, plan).block_until_ready()  # compile
    start = time.perf_counter()
    for step in range(1, repeats + 1):
        run(video, step, plan).block_until_ready()
    return 1000 * (time.perf_counter() - start) / (repeats * batch)


def format_tables(
    rows: list[Row], spent: list[dict], device_ms: float, config, videos: str | None
) -> str:
    d = config.data
    what = videos or (
        f"{VIDEO['width']}x{VIDEO['height']} H.264 ({VIDEO['frames']} frames, libx264 defaults)"
    )
    lines = [
        f"train pipeline, {d.num_frames}x{d.img_size} clips from {what}, sampling {d.sampling}, "
        f"RandAugment n={d.randaug_n} m={d.randaug_m}, repeated_aug {d.repeated_aug}, "
        f"erase {d.erase_prob}, batch {d.batch_size}, {os.cpu_count()} cores",
        "",
        "| source | augment on | workers | clips/s | clips/s per core | x video files "
        "| first batch s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r.x_video:.2f}" if r.x_video else "-"
        lines.append(
            f"| {r.source} | {r.augment_on} | {r.workers} | {r.clips_per_s:.1f} "
            f"| {r.clips_per_s_per_core:.1f} | {ratio} | {r.first_batch_s:.2f} |"
        )
    lines += [
        "",
        "CPU ms per clip, one process, the loader's own stages (no batching, threads or workers):",
        "",
        "| source | read | decode | crop | augment | onto canvas | clips/s per core, "
        "augment on host | on device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in spent:
        host = b["read"] + b["decode"] + b["crop"] + b["augment"]
        device = b["read"] + b["onto canvas"]
        lines.append(
            f"| {b['source']} | {b['read']:.1f} | {b['decode']:.1f} | {b['crop']:.1f} "
            f"| {b['augment']:.1f} | {b['onto canvas']:.1f} | {1000 / host:.1f} "
            f"| {1000 / device:.1f} |"
        )
    lines += [
        "",
        "onto canvas: with augment on device, what follows the read: the frames decoded onto "
        "data.canvas (a frame store's straight into it) and the crop plans (on device: read + "
        "onto canvas; on host: read + decode + crop + augment)",
        f"the step's crop, resize, flip, RandAugment, normalisation and erasing, jitted on this "
        f"machine's {_backend()}: {device_ms:.1f} ms per clip",
        *_headline(rows, spent),
    ]
    return "\n".join(lines)


def _headline(rows: list[Row], spent: list[dict]) -> list[str]:
    """The frame store with augment on device: the whole pipeline's clips/s per core and x video
    files per worker count, beside the loader's own stages' clips/s per core."""
    whole = [r for r in rows if (r.source, r.augment_on) == ("frames", "device")]
    own = [b for b in spent if b["source"] == "frames"]
    if not whole or not own:
        return []
    figures = ", ".join(
        f"{r.workers} workers {r.clips_per_s_per_core:.0f} ({r.x_video or 0:.1f}x)" for r in whole
    )
    stages = 1000 / (own[0]["read"] + own[0]["onto canvas"])
    return [
        f"the frame store with augment on device, clips/s per core (x video files): the whole "
        f"pipeline {figures}; the loader's own stages {stages:.0f}"
    ]


def _backend() -> str:
    import jax

    return jax.default_backend().upper()
