"""Videos on local disk or in a bucket: list files and `<class>/<file>` folders, and the items
they yield.

An item knows its label, its `video_id` (the video's path as the list file writes it, relative
to `data_root`; for class folders `<class>/<file>`) and how to read frames by index:

    frames = item.read(plan)   # plan: indices, or num_frames -> indices; uint8 (K, H, W, 3)

The id is what predictions files are keyed by, so that runs over lists in different orders, or
another tool's predictions, can be matched video by video.

List files follow VideoMAE/VideoMamba, paths relative to `data.data_root`, one video a line:
    path label            (VideoMAE, VideoMamba's K400 lists)
    path,label            (CSV)
    folder total_frames label   (extracted frames, SSv2: folder/img_00001.jpg ...)
Blank lines and lines starting with '#' are ignored. Folders of `<class>/<file>` (videos or
images) are read with labels from the sorted class names.
"""

import dataclasses

import numpy as np
from PIL import Image

from vmp_jax import storage
from vmp_jax.data import decode

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


class ListFileError(ValueError):
    """A malformed list-file line; the message names the file and the line number."""


@dataclasses.dataclass(frozen=True)
class VideoFile:
    path: str
    label: int
    video_id: str

    @property
    def name(self) -> str:
        return self.path

    def read(self, plan: decode.Plan) -> np.ndarray:
        return decode.read_frames(self.path, plan)[0]


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
    """A video file's bytes (TFDS records); `name` is the record's key."""

    data: bytes
    name: str
    label: int
    video_id: str

    def read(self, plan: decode.Plan) -> np.ndarray:
        return decode.read_frames(self.data, plan, name=self.name)[0]


@dataclasses.dataclass(frozen=True)
class FrameFolder:
    """Extracted frames `path/img_00001.jpg ...` (1-based, VideoMAE's SSv2 layout)."""

    path: str
    num_frames: int
    label: int
    video_id: str
    template: str = "img_{:05d}.jpg"

    @property
    def name(self) -> str:
        return self.path

    def read(self, plan: decode.Plan) -> np.ndarray:
        indices = decode.plan_indices(plan, self.num_frames)
        loaded = {i: self._frame(i) for i in set(int(i) for i in indices)}
        return np.stack([loaded[int(i)] for i in indices])

    def _frame(self, index: int) -> np.ndarray:
        file = storage.join(self.path, self.template.format(index + 1))
        return read_image(file)


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image, as a clip of T = 1 (or repeated to the plan's length); `data` is a path, or
    decoded pixels uint8 (H, W, 3) from TFDS."""

    data: str | np.ndarray
    label: int
    video_id: str

    @property
    def name(self) -> str:
        return self.data if isinstance(self.data, str) else f"image {self.video_id}"

    def read(self, plan: decode.Plan) -> np.ndarray:
        indices = decode.plan_indices(plan, 1)
        image = read_image(self.data) if isinstance(self.data, str) else _rgb(self.data)
        return np.broadcast_to(image, (len(indices), *image.shape))


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return image


def read_image(path: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB; DecodeError naming the file when it is missing or unreadable."""
    if not storage.exists(path):
        raise decode.DecodeError(path, "missing file")
    try:
        with storage.open(path, "rb") as f, Image.open(f) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise decode.DecodeError(path, "not a readable image", str(e)) from e


def list_entries(list_file: str, data_root: str = "", template: str = "img_{:05d}.jpg"):
    """(line as written, item or None) for every line of a list file, blank and comment lines
    included (item None), so that a list can be rewritten with some entries left out.
    ListFileError names the file and line of a malformed entry."""
    if not list_file:
        raise FileNotFoundError("no list file given (set data.train_list / data.val_list)")
    if not storage.isfile(list_file):
        raise FileNotFoundError(f"list file not found: {list_file}")
    lines = storage.read_text(list_file).splitlines()
    entries = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            entries.append((line, None))
            continue
        item = _parse_line(text, data_root, template)
        if item is None:
            raise ListFileError(
                f"{list_file}:{lineno}: expected 'path label', 'path,label' or "
                f"'folder total_frames label' with integer label and frame count, "
                f"got {text!r}"
            )
        entries.append((line, item))
    return entries


def read_list_file(list_file: str, data_root: str = "", template: str = "img_{:05d}.jpg"):
    """The items of a VideoMAE/VideoMamba list file, in file order."""
    items = [item for _, item in list_entries(list_file, data_root, template) if item]
    if not items:
        raise ListFileError(f"{list_file}: no videos listed")
    return items


def _parse_line(line: str, root: str, template: str):
    fields = [f.strip() for f in line.split(",")] if "," in line else line.rsplit(None, 2)
    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
        if int(fields[1]) == 0:
            return None  # a frame folder without frames
        path = storage.join(root, fields[0])
        return FrameFolder(path, int(fields[1]), int(fields[2]), fields[0], template)
    if "," not in line:
        fields = line.rsplit(None, 1)
    if len(fields) == 2 and fields[0] and fields[1].isdigit():
        return VideoFile(storage.join(root, fields[0]), int(fields[1]), fields[0])
    return None


def read_class_folder(folder: str, kind: str = "video"):
    """ImageNet-style layout, `folder/<class>/<file>`, of videos or images: classes sorted by
    name get labels 0..K-1; files sorted within a class; ids are `<class>/<file>`."""
    extensions, make = {
        "video": (VIDEO_EXTENSIONS, VideoFile),
        "image": (IMAGE_EXTENSIONS, ImageItem),
    }[kind]
    if not storage.isdir(folder):
        raise FileNotFoundError(f"{kind} folder not found: {folder}")
    names = storage.listdir(folder)
    classes = sorted(d for d in names if storage.isdir(storage.join(folder, d)))
    items = []
    for label, name in enumerate(classes):
        for file in sorted(storage.listdir(storage.join(folder, name))):
            if file.lower().endswith(extensions):
                items.append(make(storage.join(folder, name, file), label, f"{name}/{file}"))
    if not items:
        raise FileNotFoundError(f"no {kind}s under {folder}/<class>/ (extensions {extensions})")
    return items


def read_videos(where: str, data_root: str = ""):
    """The videos of a list file, or of a `<class>/<video>` folder."""
    if storage.isdir(where):
        return read_class_folder(where, "video")
    return read_list_file(where, data_root)
