"""A TFDS builder that packs a local video list file or `<class>/<video>` folder into
ArrayRecord files, read back with `tfds.data_source("video_list/NAME", data_dir=...)` (no
network, no TensorFlow needed).

Each record keeps the encoded video file as bytes (decoded and sampled at read time, so every
sampling and augmentation setting still applies), its label and its path as `video_id`.
Packing many small files into a few large ones is what makes video datasets fast to read on
network file systems and cloud buckets.
"""

import numpy as np
import tensorflow_datasets as tfds

from vmp_jax import storage
from vmp_jax.data import listing


class VideoList(tfds.core.GeneratorBasedBuilder):
    """Videos from VideoMAE-style list files; one builder config per dataset name."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Encoded video bytes, label and path."}

    def __init__(self, *, lists: dict[str, str] | None = None, data_root: str = "", **kwargs):
        """
        Args:
          lists: split name -> list file or class folder (only needed to build, not to read).
          data_root: the list files' paths are relative to it.
        """
        self._lists = lists or {}
        self._data_root = data_root
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "video_id": tfds.features.Text(),
                }
            ),
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # local files only
        if not self._lists:
            raise ValueError("VideoList needs lists={split: list_file} to build")
        return {
            split: self._generate_examples(path, self._data_root)
            for split, path in self._lists.items()
        }

    def _generate_examples(self, where: str, data_root: str):
        for item in listing.read_videos(where, data_root):
            if not isinstance(item, listing.VideoFile):
                raise ValueError(f"{where}: only video files can be packed, got {item.path}")
            data = storage.read_bytes(item.path)
            yield item.video_id, {"video": data, "label": item.label, "video_id": item.video_id}


def build(
    name: str, lists: dict[str, str], data_root: str, data_dir: str
) -> tfds.core.DatasetBuilder:
    """Builds `video_list/name` under data_dir from {split: list file or class folder};
    returns the builder."""
    missing = {s: p for s, p in lists.items() if not storage.exists(p)}
    if missing:
        raise FileNotFoundError(f"list files not found: {missing}")
    config = tfds.core.BuilderConfig(name=name, description=f"Videos listed in {lists}")
    builder = VideoList(
        lists=lists,
        data_root=data_root,
        data_dir=data_dir,
        config=config,
        file_format="array_record",
    )
    builder.download_and_prepare()
    return builder
