"""Where videos come from: a config's `data.source`, opened as a random-access sequence of items
(what Grain's MapDataset reads).

  list          VideoMAE/VideoMamba list files (`vmp_jax.data.listing`)
  video_folder  `<class>/<video>` folders
  image_folder  `<class>/<image>` folders (ImageNet), as clips of one frame
  tfds          TFDS datasets through `tfds.data_source`: `vmp make-tfds` video records, or
                image datasets such as imagenet2012
  frames        frame stores of `vmp make-frames` (JPEG frames in ArrayRecord shards,
                `vmp_jax.data.frame_store`); train_list / val_list name the store directories

Every item has a label, a `video_id` string (the path as listed; a TFDS record's key) and
`read(plan)` (see `listing`).
"""

import os

from vmp_jax import storage
from vmp_jax.data import frame_store
from vmp_jax.data.listing import (
    EncodedVideo,
    FrameFolder,
    ImageItem,
    ListFileError,
    VideoFile,
    list_entries,
    read_class_folder,
    read_list_file,
    read_videos,
)

SOURCES = ("list", "video_folder", "image_folder", "tfds", "frames")


class TfdsSource:
    """A TFDS dataset read through `tfds.data_source` (ArrayRecord, random access, no TF).

    Video records (vmp_jax.data.tfds_builder) hold the encoded file as `video` and its path as
    `video_id`; image datasets (imagenet2012, ...) hold decoded pixels as `image` and, where
    they have one, the file's name as `file_name` (else the record's index is the id).
    """

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        from vmp_jax.data import tfds_builder  # noqa: F401  registers the video_list builder

        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as e:  # TFDS raises several types for a dataset that is not there
            raise FileNotFoundError(
                f"TFDS dataset {name!r} split {split!r} not found under {data_dir!r} "
                f"(build it first, e.g. with `vmp make-tfds`): {e}"
            ) from e
        self.name = name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int):
        record = self._source[index]
        if "video" in record:
            key = _text(record.get("video_id", index))
            return EncodedVideo(bytes(record["video"]), key, int(record["label"]), key)
        key = _text(record.get("file_name", index))
        return ImageItem(record["image"], int(record["label"]), key)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_source(data, split: str):
    """The items of `split` ("train" or "val") as the config's `data` section describes."""
    if data.source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {data.source!r}")
    if data.source == "tfds":
        tfds_split = data.train_split if split == "train" else data.val_split
        return TfdsSource(data.tfds_name, tfds_split, data.data_root)
    where = list_path(data, split)
    if data.source == "frames":
        store = frame_store.open_store(where)
        frame_store.check_fits(store, data)
        return store
    if data.source in ("image_folder", "video_folder"):
        return read_class_folder(where, data.source.removesuffix("_folder"))
    return read_list_file(where, data.data_root, data.frame_template)


def input_paths(data) -> list[str]:
    """Every path the `data` section reads (lists, stores, the data root, the label map), for
    the access check a command makes before any work (`storage.check_access`)."""
    found = [list_path(data, "train"), list_path(data, "val"), data.get("label_map", "")]
    if data.source != "tfds":
        found.append(data.data_root)
    return [p for p in found if p]


def has_validation(data) -> bool:
    """Whether the `data` section names validation videos (a val list, or a TFDS dataset)."""
    return data.source == "tfds" or bool(data.val_list)


def list_path(data, split: str) -> str:
    """data.train_list / data.val_list, tried as given and then under data.data_root."""
    where = data.train_list if split == "train" else data.val_list
    relative = where and not storage.is_url(where) and not os.path.isabs(where)
    if relative and data.data_root and not os.path.exists(where):
        where = storage.join(data.data_root, where)
    return where


__all__ = [
    "SOURCES",
    "EncodedVideo",
    "FrameFolder",
    "ImageItem",
    "ListFileError",
    "TfdsSource",
    "VideoFile",
    "has_validation",
    "input_paths",
    "list_entries",
    "list_path",
    "open_source",
    "read_class_folder",
    "read_list_file",
    "read_videos",
]
