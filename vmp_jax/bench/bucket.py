"""`vmp bench-data --bucket`: what a training clip costs when its source is in a bucket, in
requests and bytes, counted by a GCS emulator on 127.0.0.1 (`vmp_devtools/gcs_emulator.py`, test
equipment shipped beside the package: it needs the dev extra, `pip install -e '.[dev]'`).

Counts, not timings: the emulator runs on this machine, so its latency says nothing of the real
service's; the requests a clip needs and the bytes they carry are the same against both. Per
source: video files read with the recipe's sampling (segment sampling spans the whole video:
fetched whole, in one request) and with dense sampling (16 frames 4 apart: range requests of
`decode.REMOTE_BLOCK_BYTES` for what the wanted frames need); the same with range requests
forced ("ranged": what a video larger than `decode.REMOTE_WHOLE_BYTES` gets); and a frame store
(one ranged read per stored frame, by ArrayRecord). Each clip is a new reader, as a shuffled
loader's is. Before the clips, the requests that opening the frame store costs (its tables).
"""

import dataclasses
import os

import numpy as np

from vmp_jax import storage
from vmp_jax.data import decode, frame_store, listing, pipeline, sampling

BUCKET = "vmp-bench"


@dataclasses.dataclass(frozen=True)
class BucketRow:
    source: str
    sampling: str
    clips: int
    requests_per_clip: float
    kib_per_clip: float
    share_of_video: float  # bytes per clip over the mean video file's size


def run(videos: list, store_dir: str, s: pipeline.ClipSettings, clips: int, echo=print):
    """Uploads `videos` and the store at `store_dir` to an emulated bucket and reads `clips`
    clips from each source; returns the rows (printed as a table by `format_table`)."""
    Emulator = emulator_class()
    with Emulator(BUCKET) as gcs:
        gcs.use_in_this_process()  # before this process opens any client
        echo(f"uploading {len(videos)} videos and their frame store to gs://{BUCKET}")
        remote = [_upload_video(v, i) for i, v in enumerate(videos)]
        storage.upload(store_dir, f"gs://{BUCKET}/frames")
        gcs.reset_stats()
        store = frame_store.open_store(f"gs://{BUCKET}/frames")
        echo(opening_line(store, gcs.stats()["requests"]))
        video_bytes = np.mean([storage.getsize(v.path) for v in remote])
        rng = np.random.default_rng(0)
        rows = []
        recipe, dense = (lambda: pipeline.train_plan(s, rng)), (lambda: _dense(rng))
        whole_bytes = decode.REMOTE_WHOLE_BYTES
        for source, items, kind, plan, whole in (
            ("video", remote, s.sampling, recipe, whole_bytes),
            ("video", remote, "dense 16x4", dense, whole_bytes),
            ("video, ranged", remote, s.sampling, recipe, 0),
            ("video, ranged", remote, "dense 16x4", dense, 0),
            ("frames", store, s.sampling, recipe, whole_bytes),
        ):
            gcs.reset_stats()
            decode.REMOTE_WHOLE_BYTES = whole  # 0: range requests whatever the size
            try:
                needed = sum(_read(items[i % len(items)], plan()) for i in range(clips))
            finally:
                decode.REMOTE_WHOLE_BYTES = whole_bytes
            counted = gcs.stats()
            sent = needed if items is store else counted["bytes_sent"]
            per_clip = sent / clips
            rows.append(
                BucketRow(
                    source,
                    kind,
                    clips,
                    counted["requests"] / clips,
                    per_clip / 1024,
                    per_clip / video_bytes,
                )
            )
    return rows


def opening_line(store: frame_store.FrameStore, requests: int) -> str:
    """What opening the store cost: with its index, two requests whatever its size; a store
    packed before the index is read shard by shard."""
    shards = len(store.summary["shards"])
    how = (
        "store.json and its index, whatever the number of shards"
        if "index" in store.summary
        else "packed before the index: store.json and one per shard"
    )
    return (
        f"opening the frame store ({len(store)} videos, {shards} shard{'s' * (shards != 1)}): "
        f"{requests} requests ({how})"
    )


def emulator_class():
    """vmp_devtools.gcs_emulator.Emulator, or ImportError saying what to install (a checkout
    installed without the dev extra, or an install without the vmp_devtools package)."""
    try:
        from vmp_devtools import gcs_emulator
    except ImportError as error:
        raise ImportError(
            f"vmp bench-data --bucket needs the checkout's vmp_devtools package ({error}): from "
            "the repository, pip install -e '.[dev]'"
        ) from None
    gcs_emulator.require()  # gcp-storage-emulator, the dev extra's
    return gcs_emulator.Emulator


def _read(item, plan) -> int:
    """Reads a clip; returns the bytes of the records it read (a stored video's), else 0.
    ArrayRecord asks for open-ended ranges and stops reading after the record: what the
    service sends beyond it depends on the connection, so a store's bytes are its records'."""
    if isinstance(item, frame_store.StoredVideo):
        _, records = item.read_records(decode.plan_indices(plan, item.num_frames))
        return sum(len(r) for r in records)
    item.read(plan)
    return 0


def _upload_video(video: listing.VideoFile, index: int) -> listing.VideoFile:
    url = f"gs://{BUCKET}/videos/{index:05d}{os.path.splitext(video.path)[1]}"
    storage.upload(video.path, url)
    return listing.VideoFile(url, video.label, video.video_id)


def _dense(rng):
    return lambda n: sampling.train_indices("dense", n, 16, 4, rng)


def format_table(rows: list[BucketRow], block_bytes: int = decode.REMOTE_BLOCK_BYTES) -> str:
    lines = [
        f"\nread from a bucket (a GCS emulator on 127.0.0.1; counts, not timings; video files "
        f"in {block_bytes // 1024} KiB range requests, or whole when small or when a clip spans "
        "most of one; a frame store's KiB are its records', one request each):",
        "| source | sampling | clips | requests per clip | KiB per clip | of a video file |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.source} | {r.sampling} | {r.clips} | {r.requests_per_clip:.1f} | "
        f"{r.kib_per_clip:.0f} | {r.share_of_video:.0%} |"
        for r in rows
    ]
    return "\n".join(lines)
