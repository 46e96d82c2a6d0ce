"""Where videos come from: list files, frame folders, image folders and TFDS datasets.

Every source is a random-access sequence of items (what Grain's MapDataset reads); an item knows
its label, a stable `video_id` (its position in the source, used to average test views) and how
to read frames by index:

    frames = item.read(plan)   # plan: indices, or num_frames -> indices; uint8 (K, H, W, 3)

List files follow VideoMAE/VideoMamba, paths relative to `data.data_root`, one video a line:
    path label            (VideoMAE, VideoMamba's K400 lists)
    path,label            (CSV)
    folder total_frames label   (extracted frames, SSv2: folder/img_00001.jpg ...)
Blank lines and lines starting with '#' are ignored. Folders of `<class>/<file>` (videos or
images) are read with labels from the sorted class names.
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from vmp_jax.data import decode

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
SOURCES = ("list", "video_folder", "image_folder", "tfds")


class ListFileError(ValueError):
    """A malformed list-file line; the message names the file and the line number."""


@dataclasses.dataclass(frozen=True)
class VideoFile:
    path: str
    label: int
    video_id: int

    @property
    def name(self) -> str:
        return self.path

    def read(self, plan: decode.Plan) -> np.ndarray:
        return decode.read_frames(self.path, plan)[0]


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
    """A video file's bytes (TFDS records)."""

    data: bytes
    name: str
    label: int
    video_id: int

    def read(self, plan: decode.Plan) -> np.ndarray:
        return decode.read_frames(self.data, plan, name=self.name)[0]


@dataclasses.dataclass(frozen=True)
class FrameFolder:
    """Extracted frames `path/img_00001.jpg ...` (1-based, VideoMAE's SSv2 layout)."""

    path: str
    num_frames: int
    label: int
    video_id: int
    template: str = "img_{:05d}.jpg"

    @property
    def name(self) -> str:
        return self.path

    def read(self, plan: decode.Plan) -> np.ndarray:
        indices = decode.plan_indices(plan, self.num_frames)
        loaded = {i: self._frame(i) for i in set(int(i) for i in indices)}
        return np.stack([loaded[int(i)] for i in indices])

    def _frame(self, index: int) -> np.ndarray:
        file = os.path.join(self.path, self.template.format(index + 1))
        return _read_image(file)


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image, as a clip of T = 1 (or repeated to the plan's length); `data` is a path, or
    decoded pixels uint8 (H, W, 3) from TFDS."""

    data: str | np.ndarray
    label: int
    video_id: int

    @property
    def name(self) -> str:
        return self.data if isinstance(self.data, str) else f"image {self.video_id}"

    def read(self, plan: decode.Plan) -> np.ndarray:
        indices = decode.plan_indices(plan, 1)
        image = _read_image(self.data) if isinstance(self.data, str) else _rgb(self.data)
        return np.broadcast_to(image, (len(indices), *image.shape))


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return image


def _read_image(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise decode.DecodeError(f"{path}: missing file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise decode.DecodeError(f"{path}: not a readable image ({e})") from e


def read_list_file(list_file: str, data_root: str = "", template: str = "img_{:05d}.jpg"):
    """The items of a VideoMAE/VideoMamba list file, in file order (video_id = position)."""
    if not list_file:
        raise FileNotFoundError("no list file given (set data.train_list / data.val_list)")
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"list file not found: {list_file}")
    items = []
    with open(list_file) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            item = _parse_line(line, len(items), data_root, template)
            if item is None:
                raise ListFileError(
                    f"{list_file}:{lineno}: expected 'path label', 'path,label' or "
                    f"'folder total_frames label' with integer label and frame count, "
                    f"got {line!r}"
                )
            items.append(item)
    if not items:
        raise ListFileError(f"{list_file}: no videos listed")
    return items


def _parse_line(line: str, video_id: int, root: str, template: str):
    fields = [f.strip() for f in line.split(",")] if "," in line else line.rsplit(None, 2)
    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
        if int(fields[1]) == 0:
            return None  # a frame folder without frames
        path = os.path.join(root, fields[0])
        return FrameFolder(path, int(fields[1]), int(fields[2]), video_id, template)
    if "," not in line:
        fields = line.rsplit(None, 1)
    if len(fields) == 2 and fields[0] and fields[1].isdigit():
        return VideoFile(os.path.join(root, fields[0]), int(fields[1]), video_id)
    return None


def read_class_folder(folder: str, kind: str = "video"):
    """ImageNet-style layout, `folder/<class>/<file>`, of videos or images: classes sorted by
    name get labels 0..K-1; files sorted within a class."""
    extensions, make = {
        "video": (VIDEO_EXTENSIONS, VideoFile),
        "image": (IMAGE_EXTENSIONS, ImageItem),
    }[kind]
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{kind} folder not found: {folder}")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    items = []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            if file.lower().endswith(extensions):
                items.append(make(os.path.join(folder, name, file), label, len(items)))
    if not items:
        raise FileNotFoundError(f"no {kind}s under {folder}/<class>/ (extensions {extensions})")
    return items


def read_videos(where: str, data_root: str = ""):
    """The videos of a list file, or of a `<class>/<video>` folder."""
    if os.path.isdir(where):
        return read_class_folder(where, "video")
    return read_list_file(where, data_root)


class TfdsSource:
    """A TFDS dataset read through `tfds.data_source` (ArrayRecord, random access, no TF).

    Video records (vmp_jax.data.tfds_builder) hold the encoded file as `video`; image datasets
    (imagenet2012, ...) hold decoded pixels as `image`.
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
            name = record.get("video_id", index)
            name = name.decode() if isinstance(name, bytes) else str(name)
            return EncodedVideo(bytes(record["video"]), name, int(record["label"]), index)
        return ImageItem(record["image"], int(record["label"]), index)


def open_source(data, split: str):
    """The items of `split` ("train" or "val") as the config's `data` section describes."""
    if data.source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {data.source!r}")
    if data.source == "tfds":
        tfds_split = data.train_split if split == "train" else data.val_split
        return TfdsSource(data.tfds_name, tfds_split, data.data_root)
    where = list_path(data, split)
    if data.source in ("image_folder", "video_folder"):
        return read_class_folder(where, data.source.removesuffix("_folder"))
    return read_list_file(where, data.data_root, data.frame_template)


def list_path(data, split: str) -> str:
    """data.train_list / data.val_list, tried as given and then under data.data_root."""
    where = data.train_list if split == "train" else data.val_list
    if where and not os.path.isabs(where) and data.data_root and not os.path.exists(where):
        where = os.path.join(data.data_root, where)
    return where
