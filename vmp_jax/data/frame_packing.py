"""`vmp make-frames`: pack a list's videos into a frame store (layout: vmp_jax.data.frame_store).

Worker processes decode each video (every `every`-th frame, exactly), resize frames whose short
side exceeds `short_side` down to it, and encode them as JPEG; this process writes the shards in
list order. A shard's table is written once its records are, so an interrupted packing resumes
at the first shard without one, under the same settings (checked against packing.json); the
store's index (every table in one file) and store.json are written when every shard is.
Unreadable videos are left out and reported once each with their reason, as
`vmp data-check --scan` reports them.
"""

import dataclasses
import hashlib

from vmp_jax import storage
from vmp_jax.data import decode, frame_store, listing, parallel, transforms
from vmp_jax.data.frame_store import PACKING_FILE, STORE_FILE, StoreError, shard_name


@dataclasses.dataclass(frozen=True)
class Settings:
    short_side: int = 320  # frames with a longer short side are resized down to it
    quality: int = 90  # JPEG quality
    every: int = 1  # keep every k-th frame
    videos_per_shard: int = 64

    def validate(self) -> None:
        if self.short_side < 16:
            raise ValueError(f"--short-side must be at least 16, got {self.short_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be in 1..100, got {self.quality}")
        if self.every < 1 or self.videos_per_shard < 1:
            raise ValueError("--every and --videos-per-shard must be at least 1")


def read_video(item, every: int):
    """(uint8 (K, H, W, 3) frames 0, every, 2 every..., source frame count, fps, file bytes)."""
    plan = lambda n: range(0, n, every)  # noqa: E731
    if isinstance(item, listing.VideoFile):
        frames, info = decode.read_frames(item.path, plan)
        return frames, info.num_frames, info.fps, storage.getsize(item.path)
    if isinstance(item, listing.EncodedVideo):
        frames, info = decode.read_frames(item.data, plan, name=item.name)
        return frames, info.num_frames, info.fps, len(item.data)
    seen = []
    frames = item.read(lambda n: seen.append(n) or plan(n))  # frame folders: no rate known
    return frames, seen[0], 0.0, 0


def pack_video(job) -> dict:
    """A worker's job (item, Settings) -> {"video": table entry, "jpegs": [bytes]} or
    {"error": message} for an unreadable video."""
    item, settings = job
    try:
        frames, num_frames, fps, source_bytes = read_video(item, settings.every)
    except decode.DecodeError as e:
        return {"error": str(e), "name": item.name}
    _, h, w, _ = frames.shape
    if min(h, w) > settings.short_side:
        frames = transforms.resize_short_side(frames, settings.short_side)  # (K, H', W', 3)
    jpegs = [frame_store.encode_jpeg(f, settings.quality) for f in frames]
    video = dict(
        video_id=item.video_id, label=item.label, num_frames=num_frames, fps=fps,
        height=int(frames.shape[1]), width=int(frames.shape[2]), count=len(jpegs),
    )  # fmt: skip
    return {"video": video, "jpegs": jpegs, "source_bytes": source_bytes}


def _fingerprint(items) -> str:
    """What identifies the packed list: its ids and labels in order."""
    text = "\n".join(f"{i.video_id}\t{i.label}" for i in items)
    return hashlib.sha1(text.encode()).hexdigest()


def changed_settings(path: str, settings: dict) -> list[str]:
    """'key: before -> now' for each of `settings` that differs from the JSON file at `path`
    (an earlier run's), none when there is no such file."""
    before = frame_store.read_json(path) if storage.isfile(path) else settings
    return [f"{k}: {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v]


def _check_resume(out: str, packing: dict) -> None:
    """Writes packing.json, or checks that an earlier packing into `out` had the same one."""
    path = storage.join(out, PACKING_FILE)
    if storage.isfile(path):
        changed = changed_settings(path, packing)
        if changed:
            raise StoreError(
                f"{out} holds a packing with other settings or videos ({'; '.join(changed)}): "
                "use another --out, or delete it to start over"
            )
    elif storage.isdir(out) and storage.listdir(out):
        raise StoreError(f"{out} exists and is not a frame store: give an empty or new --out")
    storage.makedirs(out)
    frame_store.write_json(path, packing)


def _write_shard(out: str, shard: int, results: list[dict]) -> None:
    """Writes a shard's records, then its table (which marks the shard complete). ArrayRecord
    writes local files only: for a store in a bucket the shard is written locally and
    uploaded before its table."""
    from array_record.python.array_record_module import ArrayRecordWriter

    name = storage.join(out, shard_name(shard))
    with storage.staged_file(f"{name}.array_record") as records_file:
        _write_records(ArrayRecordWriter(records_file, "group_size:1"), results)
    frame_store.write_json(f"{name}.json", _shard_table(results))


def _write_records(writer, results: list[dict]) -> None:
    for r in results:
        for jpeg in r.get("jpegs", ()):
            writer.write(jpeg)
    writer.close()


def _shard_table(results: list[dict]) -> dict:
    """A shard's table: its videos (where their records start), the unreadable ones, totals."""
    videos, unreadable, records, source_bytes = [], {}, 0, 0
    for r in results:
        if "error" in r:
            unreadable[r["name"]] = r["error"]
            continue
        videos.append(r["video"] | {"first": records})
        records += len(r["jpegs"])
        source_bytes += r["source_bytes"]
    return dict(videos=videos, unreadable=unreadable, records=records, source_bytes=source_bytes)


def pack(items, out: str, settings: Settings, *, workers: int | None = None, progress=None):
    """Packs `items` (a list's or folder's videos) into the store `out`, resuming an earlier
    interrupted packing with the same settings; returns store.json's contents.

    Args:
      workers: decoding processes (default: all cores).
      progress: called once per video packed (e.g. a progress bar's update).
    """
    settings.validate()
    packing = dataclasses.asdict(settings) | {
        "format": frame_store.FORMAT,
        "videos": len(items),
        "fingerprint": _fingerprint(items),
    }
    _check_resume(out, packing)
    per = settings.videos_per_shard
    shards = range(-(-len(items) // per))
    done = {s for s in shards if storage.isfile(storage.join(out, f"{shard_name(s)}.json"))}
    if progress:
        for _ in range(sum(len(items[s * per : (s + 1) * per]) for s in done)):
            progress()
    todo = [s for s in shards if s not in done]
    pending = [item for s in todo for item in items[s * per : (s + 1) * per]]
    results = parallel.map_in_processes(pack_video, ((i, settings) for i in pending), workers)
    for s in todo:
        batch = []
        for _ in items[s * per : (s + 1) * per]:
            batch.append(next(results))
            if progress:
                progress()
        _write_shard(out, s, batch)
    return _write_summary(out, settings, list(shards))


def _write_summary(out: str, settings: Settings, shards: list[int]) -> dict:
    """Writes the index of every shard's table (rewritten on each run, so that it matches the
    shards a resume kept and the ones it packed), then store.json, naming the index by its
    SHA-1 (a store is complete, and its index the right one, only once store.json is there)."""
    tables = [frame_store.read_json(storage.join(out, f"{shard_name(s)}.json")) for s in shards]
    names = [shard_name(s) for s in shards]
    index = frame_store.index_bytes(frame_store.make_index(names, tables))
    storage.write_bytes(storage.join(out, frame_store.INDEX_FILE), index)
    videos = [v for t in tables for v in t["videos"]]
    shard_bytes = sum(
        storage.getsize(storage.join(out, f"{shard_name(s)}.array_record")) for s in shards
    )
    summary = dataclasses.asdict(settings) | {
        "format": frame_store.FORMAT,
        "shards": names,
        "videos": len(videos),
        "records": sum(t["records"] for t in tables),
        "bytes": shard_bytes,
        "source_bytes": sum(t["source_bytes"] for t in tables),
        "unreadable": {k: e for t in tables for k, e in t["unreadable"].items()},
        "index": {"file": frame_store.INDEX_FILE, "sha1": frame_store.index_digest(index)},
    }
    frame_store.write_json(storage.join(out, STORE_FILE), summary)
    return summary


def report(summary: dict) -> list[str]:
    """What `vmp make-frames` prints: totals, the size against the source files', and each
    unreadable video once."""
    from vmp_jax.data import scan

    mb, n = summary["bytes"] / 2**20, max(summary["videos"], 1)
    lines = [
        f"stored {summary['videos']} videos ({summary['records']} frames, 1 in "
        f"{summary['every']}, short side {summary['short_side']}, JPEG q{summary['quality']}): "
        f"{mb:.1f} MiB, {mb / n:.2f} MiB per video"
    ]
    if summary["source_bytes"]:
        ratio = summary["bytes"] / summary["source_bytes"]
        lines.append(f"  {ratio:.1f}x the source files' {summary['source_bytes'] / 2**20:.1f} MiB")
    bad = summary["unreadable"]
    if bad:
        lines += [f"unreadable: {len(bad)} videos, left out", *scan.bad_file_lines(bad)]
    return lines
