"""`vmp make-frames --reencode gop8|intra`: for users who keep video files, re-encode them with
short GOPs so that exact selective decoding (vmp_jax.data.decode) starts close to every wanted
frame.

With libx264's defaults (a keyframe every 250 frames) the 8 frames of a training clip spread
over a 10 s video cost nearly a whole decode; with a keyframe every 8 frames (`gop8`) each
wanted frame needs at most 7 before it, and with every frame a keyframe (`intra`) only itself.
The price is size, which the command prints with the decode time per clip before and after.

The output is a folder of H.264 MP4 files (libx264 at `crf`, 4:2:0, the short side resized
down to `short_side`, an odd side cropped by one pixel) at the videos' relative paths (a
later video whose relative path an earlier one took gets its own name), and a list file per
split, read as `data.source=list` with `data.data_root` the folder. Resumable:
each file is written whole (a temporary name renamed, or one upload), and a rerun keeps the
files there; reencode.json records which source each file is (to be) made from, before any is
written, so a rerun with the lists reordered keeps each source's name and never takes another
video's file for it. Unreadable videos are left out and listed, as `vmp make-frames` lists them.
"""

import collections
import dataclasses
import fractions
import hashlib
import os
import time

import numpy as np

from vmp_jax import storage
from vmp_jax.data import (
    decode,
    encode,
    frame_packing,
    frame_store,
    listing,
    parallel,
    sampling,
    transforms,
)

GOPS = {"gop8": 8, "intra": 1}  # --reencode: frames from one keyframe to the next


@dataclasses.dataclass(frozen=True)
class Settings:
    gop: str = "gop8"
    short_side: int = 320
    crf: int = 23  # libx264's constant quality (its default); 18 is near visually lossless

    def validate(self) -> None:
        if self.gop not in GOPS:
            raise ValueError(f"--reencode must be one of {sorted(GOPS)}, got {self.gop!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be in 0..51, got {self.crf}")
        if self.short_side < 16:
            raise ValueError(f"--short-side must be at least 16, got {self.short_side}")


def relative_path(item) -> str:
    """Where `item` is re-encoded, relative to the output folder: its id (its path as the list
    writes it, or `<class>/<file>`) as .mp4, made relative (a URL's scheme and a leading '/'
    dropped, '..' parts written '_'), so no id can reach outside the folder."""
    path = item.video_id.split("://", 1)[-1].replace("\\", "/")
    parts = ["_" if p == ".." else p for p in path.split("/") if p not in ("", ".")]
    return "/".join([*parts[:-1], os.path.splitext(parts[-1])[0] + ".mp4"])


def _source_key(item) -> str:
    """What makes two items one source: the file (its absolute path or URL), else the name."""
    path = getattr(item, "path", None)
    return storage.resolve(path) if path else item.name


def assign_targets(splits, earlier=None, *, recorded=True) -> list[list[str]]:
    """Each item's copy, relative to the output folder, for the items of every split written
    into one folder (a list of lists, in order): `relative_path`, but never one copy for two
    sources. An item listed again (the same file) shares its copy; a later source whose
    relative path an earlier one took (`a.avi` after `a.mp4`, `../x.mp4` after `_/x.mp4`) gets
    `<stem>.<8 hex digits of its id's SHA-256>.mp4` instead. ValueError, naming both sources,
    where that name is taken too.

    Args:
      earlier: an earlier run's {source key: copy} (`recorded_targets`): those sources keep
        their copies and no other source gets one of them, whatever the order of the lists.
      recorded: False where the folder holds an earlier run that did not record its sources
        (a reencode.json from before the record): then two sources with one relative path are
        a ValueError, since which of them the copy there was made from is unknown.
    """
    copy_of: dict[str, str] = dict(earlier or {})  # source key -> target
    owner = {target: key for key, target in copy_of.items()}  # target -> its source's name
    out = []
    for items in splits:
        out.append([])
        for item in items:
            key = _source_key(item)
            if key not in copy_of:
                copy_of[key] = _free_target(item, owner, recorded)
                owner[copy_of[key]] = item.name
            out[-1].append(copy_of[key])
    return out


def _free_target(item, owner: dict[str, str], recorded: bool = True) -> str:
    target = relative_path(item)
    if target not in owner:
        return target
    if not recorded:
        raise ValueError(
            f"{item.name} and {owner[target]} both re-encode to {target}, and the earlier run's "
            f"{SETTINGS_FILE} does not record which of them the copy there was made from: "
            "delete that folder to start over, or use another --out"
        )
    digest = hashlib.sha256(item.video_id.encode()).hexdigest()[:8]
    unique = f"{os.path.splitext(target)[0]}.{digest}.mp4"
    if unique in owner:
        raise ValueError(
            f"{item.name} and {owner[unique]} would be re-encoded to one file {unique}: "
            "rename one of them, or re-encode them into separate --out folders"
        )
    return unique


def x264_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, H', W', 3): the short side resized down to `short_side` if
    longer, an odd side cropped by one pixel (libx264's 4:2:0 takes even sides only)."""
    if min(frames.shape[1:3]) > short_side:
        frames = transforms.resize_short_side(frames, short_side)
    _, h, w, _ = frames.shape
    return frames[:, : h - h % 2, : w - w % 2]


def _encode(path: str, frames: np.ndarray, fps: float, settings: Settings) -> None:
    rate = fractions.Fraction(fps or 25.0).limit_denominator(1001)  # 29.97 -> 30000/1001
    gop = GOPS[settings.gop]  # a keyframe exactly every `gop` frames: no scene-cut extras
    params = f"{encode.REPRODUCIBLE_X264['x264-params']}:keyint={gop}:min-keyint={gop}:scenecut=0"
    options = {"x264-params": params, "crf": str(settings.crf)}
    encode.write_video(path, frames, fps=rate, options=options)


def _write_whole(path: str, frames: np.ndarray, fps: float, settings: Settings) -> None:
    """Encodes to `path` whole or not at all: locally through a temporary file renamed over
    it; in a bucket through a local file uploaded at the end."""
    if storage.is_url(path):
        with storage.staged_file(path) as local:
            _encode(local, frames, fps, settings)
        return
    storage.makedirs(storage.dirname(path))
    part = f"{path}.part.mp4"  # the extension names the container
    _encode(part, frames, fps, settings)
    os.replace(part, path)


SETTINGS_FILE = "reencode.json"


def recorded_targets(out: str) -> dict[str, str] | None:
    """The copies an earlier run into `out` made or started, {source key: copy relative to
    `out`}, from out/reencode.json: {} when there was no earlier run, None when its
    reencode.json is older than the record (settings only)."""
    path = storage.join(out, SETTINGS_FILE)
    if not storage.isfile(path):
        return {}
    return frame_store.read_json(path).get("targets")


def _check_resume(out: str, settings: Settings, claims: dict[str, str]) -> None:
    """Checks that an earlier run into `out` had the same settings (the files it kept would
    otherwise mix two encodings) and gave no copy of `claims` ({source key: copy}) to another
    source (a kept file would be another video's), then writes out/reencode.json: the
    settings and every copy's source, before any copy is written."""
    path = storage.join(out, SETTINGS_FILE)
    changed = frame_packing.changed_settings(path, dataclasses.asdict(settings))
    if changed:
        raise ValueError(
            f"{out} holds copies re-encoded with other settings ({'; '.join(changed)}): use "
            "another --out, or delete it to start over"
        )
    earlier = recorded_targets(out) or {}
    owner = {target: key for key, target in earlier.items()}
    for key, target in claims.items():
        if owner.get(target, key) != key:
            raise ValueError(
                f"{key} would be re-encoded to {storage.join(out, target)}, which an earlier run "
                f"made from {owner[target]}: use the names `assign_targets` gives with "
                "`recorded_targets`, another --out, or delete it to start over"
            )
        if earlier.get(key, target) != target:
            raise ValueError(
                f"{key} would be re-encoded to {target}, but an earlier run into {out} made its "
                f"copy {earlier[key]}: use the names `assign_targets` gives with "
                "`recorded_targets`, another --out, or delete it to start over"
            )
    record = {**dataclasses.asdict(settings), "targets": {**earlier, **claims}}
    frame_store.write_json(path, record)


def reencode_video(job) -> dict:
    """A worker's job (item, Settings, target path) -> {"path", "bytes", "source_bytes",
    "kept"} or {"error", "name"} for an unreadable video. A file already at the target (a
    finished earlier run's) is kept."""
    item, settings, path = job
    if storage.isfile(path):
        source = getattr(item, "path", "")
        source_bytes = storage.getsize(source) if storage.isfile(source) else 0
        return dict(path=path, bytes=storage.getsize(path), source_bytes=source_bytes, kept=True)
    try:
        frames, _, fps, source_bytes = frame_packing.read_video(item, every=1)
    except decode.DecodeError as e:
        return {"error": str(e), "name": item.name}
    _write_whole(path, x264_frames(frames, settings.short_side), fps, settings)
    return dict(path=path, bytes=storage.getsize(path), source_bytes=source_bytes, kept=False)


def reencode(
    items,
    out: str,
    list_name: str,
    settings: Settings,
    *,
    targets=None,
    workers=None,
    progress=None,
):
    """Re-encodes `items` under `out` (each source once, however often it is listed) and writes
    the list file `out/list_name` of those that could be read (their new paths, their labels);
    returns {"results": [...] in item order, "list": its path}. ValueError, before any work,
    when a target is its own source (--out the data root of .mp4 files).

    Args:
      targets: each item's copy relative to `out`, from `assign_targets` over every split
        written into `out` (default: over `items` alone).
    """
    settings.validate()
    if targets is None:
        earlier = recorded_targets(out)
        targets = assign_targets([items], earlier, recorded=earlier is not None)[0]
    relative = targets
    targets = [storage.join(out, t) for t in relative]
    for item, target in zip(items, targets, strict=True):
        source = getattr(item, "path", None)
        if source and storage.resolve(source) == storage.resolve(target):
            raise ValueError(f"--out {out} would overwrite the source video {source}")
    claims = {_source_key(item): t for item, t in zip(items, relative, strict=True)}
    _check_resume(out, settings, claims)
    uses, first = collections.Counter(targets), {}
    for item, target in zip(items, targets, strict=True):
        first.setdefault(target, item)  # in list order
    jobs = ((item, settings, target) for target, item in first.items())
    done = {}
    computed = parallel.map_in_processes(reencode_video, jobs, workers)
    for target, result in zip(first, computed, strict=True):
        done[target] = result
        for _ in range(uses[target] if progress else 0):
            progress()
    results = [done[t] for t in targets]
    lines = [
        f"{path} {item.label}"
        for item, path, r in zip(items, relative, results, strict=True)
        if "error" not in r
    ]
    list_file = storage.join(out, list_name)
    storage.write_text(list_file, "\n".join(lines) + "\n")
    return {"results": results, "list": list_file}


def clip_decode_ms(path: str, clips: int = 8, num_frames: int = 8, seed: int = 0) -> float:
    """CPU ms to decode one training clip (segment sampling of `num_frames` over the whole
    video, the selective exact decoder) of the video at `path`, over `clips` clips."""
    rng = np.random.default_rng(seed)
    data = storage.read_bytes(path)
    start = time.process_time()
    for _ in range(clips):
        plan = lambda n: sampling.train_indices("segment", n, num_frames, 1, rng)  # noqa: E731
        decode.read_frames(data, plan, name=path)
    return 1000 * (time.process_time() - start) / clips


def report(items, done: dict, settings: Settings, sample: int = 4) -> list[str]:
    """What `--reencode` prints: files written and kept, the size against the sources', the
    decode CPU per 8-frame training clip before and after on up to `sample` videos (the
    trade-off), and each unreadable video once."""
    from vmp_jax.data import scan

    results = done["results"]
    files = {r["path"]: (i, r) for i, r in zip(items, results, strict=True) if "error" not in r}
    good = list(files.values())  # each file once, however often it is listed
    new, source = sum(r["bytes"] for _, r in good), sum(r["source_bytes"] for _, r in good)
    kept = sum(r["kept"] for _, r in good)
    gop = GOPS[settings.gop]
    lines = [
        f"re-encoded {len(good) - kept} videos, kept {kept} already there ({settings.gop}: a "
        f"keyframe every {gop} frame{'s' if gop > 1 else ''}, CRF {settings.crf}, short side "
        f"{settings.short_side}): {new / 2**20:.1f} MiB, {new / 2**20 / max(len(good), 1):.2f} "
        f"MiB per video; list {done['list']}"
    ]
    if source:
        lines.append(f"  {new / source:.1f}x the source files' {source / 2**20:.1f} MiB")
    timed = [(i, r) for i, r in good if isinstance(i, listing.VideoFile)][:sample]
    if timed:
        before = np.mean([clip_decode_ms(i.path) for i, _ in timed])
        after = np.mean([clip_decode_ms(r["path"]) for _, r in timed])
        lines.append(
            f"  decoding an 8-frame training clip (exact, one core, {len(timed)} videos): "
            f"{before:.1f} ms -> {after:.1f} ms of CPU ({before / after:.1f}x faster)"
        )
    bad = {r["name"]: r["error"] for r in results if "error" in r}
    if bad:
        lines += [f"unreadable: {len(bad)} videos, left out", *scan.bad_file_lines(bad)]
    return lines
