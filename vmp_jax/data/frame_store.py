"""The frame store: a dataset's videos as JPEG frames in ArrayRecord shards (`data.source=frames`).

Decoding H.264 on the CPU costs tens of ms per training clip whatever the library; decoding the
8 or 16 wanted frames from JPEG costs a few. So, as MMAction2's raw frames and DMVR/scenic's
frame records do, `vmp make-frames` (vmp_jax.data.frame_packing) decodes every video once and
stores its frames, resized to a short side, as JPEG. One record per frame (group size 1), so a
clip reads only its own frames, from a local disk or a bucket.

Layout of a store directory:
    shard-00000.array_record   the frames of a run of videos, in list order, one JPEG a record
    shard-00000.json           that shard's table (written once the shard is complete):
                               {"videos": [{"video_id", "label", "num_frames", "fps", "height",
                               "width", "count", "first"}], "unreadable": {name: error}, ...}
    packing.json               the packing's settings (written first; a resume must match)
    index.json                 every shard's table in one file (column per field, `first`
                               counted from the store's first record), written when every shard
                               is, so that opening a store in a bucket costs two requests, not
                               one per shard; stores packed before it are read shard by shard
    store.json                 written last: the settings, the totals and the index's SHA-1;
                               its presence marks a complete store

A stored video keeps the source's frame count and every `every`-th frame (`count` of them), so
sampling plans the same indices over it as over the video file and each index reads the stored
frame nearest to it (source frame `round(i / every) * every`).
"""

import dataclasses
import hashlib
import json

import numpy as np

from vmp_jax import storage
from vmp_jax.data import decode

FORMAT = 1
STORE_FILE = "store.json"
PACKING_FILE = "packing.json"
INDEX_FILE = "index.json"
# A stored video's entry in a shard's table, and the index's columns.
VIDEO_FIELDS = ("video_id", "label", "num_frames", "fps", "height", "width", "count", "first")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


class StoreError(ValueError):
    """A frame store that is missing, unfinished, or unfit for the config; names the store."""


class _Records:
    """The store's shards as one random-access sequence of JPEG records, opened on first use in
    each process (the reader does not pickle; Grain's workers get their own)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._source = None

    def __getstate__(self):
        return {"paths": self.paths, "_source": None}

    def read(self, indices: list[int]) -> list[bytes]:
        if self._source is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            self._source = ArrayRecordDataSource(self.paths)
        # One record at a time: __getitems__ reads through a thread pool, which Grain's worker
        # processes may already have shut down ("cannot schedule new futures").
        return [self._source[i] for i in indices]


@dataclasses.dataclass(frozen=True)
class StoredVideo:
    """One video of a frame store; `read` takes the same plans as a video file's item."""

    records: _Records
    first: int  # its first record in the store
    count: int  # stored frames
    every: int  # the source frame of stored frame j is j * every
    num_frames: int  # the source's frame count: what sampling plans over
    label: int
    video_id: str
    store: str
    height: int  # of the stored frames
    width: int

    @property
    def name(self) -> str:
        return f"{self.store}:{self.video_id}"

    def stored_index(self, index: int) -> int:
        """The stored frame nearest to source frame `index`."""
        return min(self.count - 1, int(round(index / self.every)))

    def read(self, plan: decode.Plan, short_side: int = 0) -> np.ndarray:
        """uint8 (len(indices), H, W, 3): the stored frames nearest to the plan's indices, each
        JPEG decoded once; a corrupt record raises DecodeError (skipped and counted).
        short_side: for a caller that resizes the frames down to it, they are decoded at 1/2,
        1/4 or 1/8 of their size where their short side stays at least that (`dct_reduction`)."""
        reduction = dct_reduction(self.height, self.width, short_side)
        size = reduced(self.height, reduction), reduced(self.width, reduction)
        return self.read_onto(plan, size, reduction)

    def read_onto(
        self, plan: decode.Plan, canvas: tuple[int, int], reduction: int = 1, into=None
    ) -> np.ndarray:
        """uint8 (len(indices), Hc, Wc, 3): `read`'s frames (at 1/reduction of their size) at
        the top left of a zeroed canvas at least as large as them (what `pipeline.on_canvas`
        makes of `read`'s answer); written into `into` if given (`decode_onto`)."""
        indices = decode.plan_indices(plan, self.num_frames)
        return self.decode_onto(indices, *self.read_records(indices), canvas, reduction, into)

    def read_records(self, indices) -> tuple[list[int], list[bytes]]:
        """(the stored frames that source frames `indices` need, sorted; their JPEG records)."""
        wanted = sorted({self.stored_index(int(i)) for i in indices})
        try:
            return wanted, self.records.read([self.first + j for j in wanted])
        except (RuntimeError, ValueError, OSError) as e:  # ArrayRecord: RuntimeError, bad chunk
            raise decode.DecodeError(self.name, "corrupt stored frame", str(e)) from e

    def decode_onto(
        self, indices, wanted: list[int], data: list[bytes], canvas, reduction: int = 1, into=None
    ) -> np.ndarray:
        """`read_onto`'s canvas from `read_records`' answer, the frames decoded at 1/reduction
        of their size. Where they are as wide as the canvas (always for `read`), libjpeg-turbo
        decodes each one straight into its rows of the canvas: no frame arrays to allocate,
        stack or copy (benchmarks/RESULTS.md). into: a C-contiguous uint8 (K, Hc, Wc, 3) array
        to decode into (a clip's slot of the batch, `pipeline.LoadBatch`), every byte written
        (the padding zeroed), instead of a new canvas."""
        h, w = reduced(self.height, reduction), reduced(self.width, reduction)
        if h > canvas[0] or w > canvas[1]:
            raise ValueError(f"{self.name}: {h}x{w} frames exceed {canvas}")
        placed = blank_canvas((len(indices), *canvas, 3), h, w, into)  # (K, Hc, Wc, 3)
        jpegs = dict(zip(wanted, data, strict=True))
        first = {}  # stored frame -> the slot it was decoded into
        for slot, i in enumerate(indices):
            j = self.stored_index(int(i))
            if j in first:
                placed[slot] = placed[first[j]]
                continue
            first[j] = slot
            rows = placed[slot, :h]  # (h, Wc, 3), contiguous
            if w == canvas[1]:
                decode_jpeg(jpegs[j], self.name, into=rows, reduction=reduction)
            else:
                frame = np.empty((h, w, 3), np.uint8)
                rows[:, :w] = decode_jpeg(jpegs[j], self.name, frame, reduction)
        return placed


def blank_canvas(shape: tuple[int, int, int, int], h: int, w: int, into=None) -> np.ndarray:
    """uint8 (K, Hc, Wc, 3) canvases for h x w frames at their top left: zeros, or `into`
    (C-contiguous, of that shape and dtype) with all but the frames' place zeroed, so that
    writing the frames there makes it what zeros would."""
    if into is None:
        return np.zeros(shape, np.uint8)
    if into.shape != shape or into.dtype != np.uint8 or not into.flags.c_contiguous:
        raise ValueError(
            f"a canvas to write into must be C-contiguous uint8 {shape}, got {into.dtype} "
            f"{into.shape}{'' if into.flags.c_contiguous else ' (not contiguous)'}"
        )
    into[:, h:] = 0
    into[:, :h, w:] = 0
    return into


# libjpeg's DCT scaling: at 1/2, 1/4 and 1/8 of the size, the decoder skips most of the inverse
# DCT, upsampling and colour conversion of the dropped pixels (a quarter to a third less CPU at
# 320 px); its other factors (3/4, 5/8, ...) cost more than a full decode.
DCT_REDUCTIONS = (8, 4, 2)


def reduced(size: int, reduction: int) -> int:
    """A frame side decoded at 1/reduction, as libjpeg rounds it (up)."""
    return -(-size // reduction)


def dct_reduction(height: int, width: int, short_side: int) -> int:
    """The largest of 8, 4 and 2 by which libjpeg may shrink height x width frames while
    decoding them with their short side still at least `short_side`; 1 when none may."""
    fits = [r for r in DCT_REDUCTIONS if min(reduced(height, r), reduced(width, r)) >= short_side]
    return fits[0] if short_side > 0 and fits else 1


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes (libjpeg-turbo, 4:2:0)."""
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality, "RGB", "420")


def decode_jpeg(
    data: bytes, name: str, into: np.ndarray | None = None, reduction: int = 1
) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3) RGB (libjpeg-turbo), decoded into `into` (a C-contiguous
    array of the frame's shape at 1/reduction, `reduced`) if given; DecodeError naming `name` if
    corrupt or not of `into`'s shape."""
    import simplejpeg

    try:
        if into is None:
            return simplejpeg.decode_jpeg(data, "RGB")
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        size = reduced(height, reduction), reduced(width, reduction)
        if (*size, 3) != into.shape:
            raise ValueError(f"a {height}x{width} frame where the store's table says {into.shape}")
        # simplejpeg takes the smallest of libjpeg's scalings at least min_height x min_width.
        simplejpeg.decode_jpeg(data, "RGB", min_height=size[0], min_width=size[1], buffer=into)
        return into
    except ValueError as e:
        raise decode.DecodeError(name, "corrupt stored frame", str(e)) from e


def read_json(path: str) -> dict:
    return json.loads(storage.read_text(path))


def write_json(path: str, value: dict) -> None:
    """Written whole or not at all (`storage.write_text`), so a crash leaves no half table."""
    storage.write_text(path, json.dumps(value, indent=1))


@dataclasses.dataclass(frozen=True)
class FrameStore:
    """A complete store, as a random-access sequence of `StoredVideo` (what `open_source`
    gives the pipelines)."""

    path: str
    summary: dict  # store.json
    videos: list[StoredVideo]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> StoredVideo:
        return self.videos[index]

    @property
    def short_side(self) -> int:
        """The smallest short side of the stored frames."""
        return min(min(v.height, v.width) for v in self.videos)

    @property
    def every(self) -> int:
        return self.summary["every"]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) that holds every stored frame."""
        return max(v.height for v in self.videos), max(v.width for v in self.videos)


def open_store(path: str) -> FrameStore:
    """Reads a store's tables: store.json and index.json, two reads whatever the number of
    shards (a store packed before the index: store.json and each shard's table); StoreError
    when `path` holds no complete store or its index is not the one store.json names."""
    summary = _read_summary(path)
    if summary.get("format") != FORMAT:
        raise StoreError(f"frame store {path}: format {summary.get('format')}, expected {FORMAT}")
    if "index" in summary:
        index = _read_index(path, summary)
    else:
        tables = [read_json(storage.join(path, f"{shard}.json")) for shard in summary["shards"]]
        index = make_index(summary["shards"], tables)
    records = _Records([storage.join(path, f"{s}.array_record") for s in index["shards"]])
    fields = ("first", "count", "num_frames", "label", "video_id", "height", "width")
    every = summary["every"]
    videos = [
        StoredVideo(records, first, count, every, num_frames, label, video_id, path, h, w)
        for first, count, num_frames, label, video_id, h, w in zip(
            *(index["videos"][field] for field in fields), strict=True
        )
    ]
    if not videos:
        raise StoreError(f"frame store {path} holds no videos")
    return FrameStore(path, summary, videos)


def _read_summary(path: str) -> dict:
    """store.json, in one read; StoreError when it is missing (unfinished, or no store)."""
    try:
        return read_json(storage.join(path, STORE_FILE))
    except FileNotFoundError:
        pass
    if storage.isfile(storage.join(path, PACKING_FILE)):
        raise StoreError(
            f"frame store {path} is unfinished (no {STORE_FILE}): run the same "
            "`vmp make-frames` command again to finish it"
        )
    raise StoreError(
        f"no frame store at {path} (no {STORE_FILE}; build one with `vmp make-frames`)"
    )


def make_index(shards: list[str], tables: list[dict]) -> dict:
    """The shards' tables as one: a column per field of `VIDEO_FIELDS`, each video's `first`
    record counted from the store's first (ArrayRecord reads the shards as one sequence)."""
    columns = {field: [] for field in VIDEO_FIELDS}
    offset = 0
    for table in tables:
        for video in table["videos"]:
            for field, column in columns.items():
                column.append(video[field] + offset if field == "first" else video[field])
        offset += table["records"]
    return {
        "format": FORMAT,
        "shards": list(shards),
        "records": [t["records"] for t in tables],
        "videos": columns,
    }


def index_bytes(index: dict) -> bytes:
    """index.json's bytes: compact (a Kinetics-400 store's index is about 14 MB so, twice that
    indented)."""
    return json.dumps(index, separators=(",", ":")).encode("utf-8")


def index_digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _read_index(path: str, summary: dict) -> dict:
    """index.json, checked against what store.json says of it (its SHA-1, the shards)."""
    rewrite = "run the same `vmp make-frames` command again to rewrite it"
    stale = (
        f"frame store {path}: {INDEX_FILE} is not the index {STORE_FILE} names (copied from "
        f"another store, or written by a packing cut short): {rewrite}"
    )
    try:
        data = storage.read_bytes(storage.join(path, INDEX_FILE))
    except FileNotFoundError:
        raise StoreError(f"frame store {path}: {INDEX_FILE} is missing: {rewrite}") from None
    if index_digest(data) != summary["index"]["sha1"]:
        raise StoreError(stale)
    index = json.loads(data)
    if index["shards"] != summary["shards"]:
        raise StoreError(stale)
    return index


def check_fits(store: FrameStore, data) -> None:
    """StoreError, before any work, when the config's clips need what the store lacks: a short
    side above the stored one, frames more finely spaced than the stored ones, or (with
    data.augment_on=device) a data.canvas too small for the stored frames."""
    need = max(data.img_size or 0, data.short_side or 0)
    if store.short_side < need:
        raise StoreError(
            f"frame store {store.path}: frames stored at short side {store.short_side}, below "
            f"the config's data.short_side / data.img_size ({need}); repack with "
            f"`vmp make-frames --short-side {need}` or more"
        )
    if store.every > 1 and data.sampling == "dense" and store.every > data.sampling_rate:
        raise StoreError(
            f"frame store {store.path} keeps every {store.every}th frame, but data.sampling=dense "
            f"with data.sampling_rate={data.sampling_rate} needs frames {data.sampling_rate} "
            "apart: repack with a smaller --every"
        )
    for video in store.videos:
        if video.count < min(data.num_frames or 1, video.num_frames):
            raise StoreError(
                f"frame store {store.path}: video {video.video_id} keeps {video.count} frames "
                f"(every {store.every}th of {video.num_frames}); a clip of data.num_frames="
                f"{data.num_frames} needs {data.num_frames}: repack with a smaller --every"
            )
    if data.augment_on == "device" and data.canvas is not None:  # None: sized to the store
        big = [v for v in store.videos if v.height > data.canvas[0] or v.width > data.canvas[1]]
        if big:
            fits = (max([v.height for v in big] + [data.canvas[0]]),)
            fits += (max([v.width for v in big] + [data.canvas[1]]),)
            raise StoreError(
                f"frame store {store.path}: video {big[0].video_id}'s frames "
                f"({big[0].height}x{big[0].width}) exceed data.canvas {tuple(data.canvas)}, as "
                f'{len(big)} videos\' do: set --config.data.canvas="{fits}"'
            )
