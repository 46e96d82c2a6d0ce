"""An AVA experiment config's inputs: its `ava` section and `data` section to the clips
(`ava_clips.ClipConfig`, `AvaClips`) and the training and evaluation streams.

The files come from `data.data_root` laid out as AVA's release (`ava_clips.open_split`: the
ground truth `ava_{train,val}_v2.2.csv`, the excluded timestamps, the person detections
`ava_val_predicted_boxes.csv`, the label map of the evaluated actions, the videos in
`videos/` or `ava.videos`), so that `--config.data.data_root=DIR` is the only flag a dataset
needs, `vmp make-synthetic --kind ava`'s and a real AVA download's alike.

A clip is data.num_frames (the model's T) frames, data.sampling_rate (r) apart, around the
keyframe; data.img_size is the training crop and data.flip the flip. The `ava` section
(configs/common.py `ava_experiment`):
  test_size          (H, W) an evaluation clip's frames are fitted into (aspect kept, padded)
  train_scale        training: the frame at test_size's scale times a factor in this range,
                     then a data.img_size square crop (and data.flip)
  max_boxes          the static number of boxes per clip (the mask marks the real ones)
  box_jitter         training: each GT box side moved by up to this fraction of the box
  score_threshold    evaluation: person detections kept at or above it (the top box always)
  test_boxes         "detected" (the person detections) or "gt" (the ground-truth boxes)
  videos             the videos' folder or a frame store ("": data_root/videos), holding
                     every video of both splits
  detections         evaluation: the person detections ("": data_root's
                     ava_val_predicted_boxes.csv): SlowFast's CSV, or MMAction2's
                     dense-proposals pickle (.pkl), local or in a bucket
  fps                the timestamp convention (AVA: 30)
"""

from vmp_jax import storage
from vmp_jax.data import ava_clips, pipeline

TEST_BOXES = ("detected", "gt")


def is_ava(config) -> bool:
    """Whether `config` trains the AVA detector (model.task "ava")."""
    return config.model.get("task", "classify") == "ava"


def clip_config(config) -> ava_clips.ClipConfig:
    """The ClipConfig of an AVA experiment config; ValueError naming ava.test_size when the
    model's patches do not tile it (found here, before any step, not at the first
    validation)."""
    a, d = config.ava, config.data
    patch = config.model.patch_size
    if len(a.test_size) != 2 or any(side % patch for side in a.test_size):
        raise ValueError(
            f"ava.test_size is {tuple(a.test_size)}: expected (height, width), each a multiple "
            f"of model.patch_size {patch} (e.g. (256, 464) for 16:9 frames at short side 256)"
        )
    return ava_clips.ClipConfig(
        num_frames=d.num_frames,
        frame_stride=d.sampling_rate,
        img_size=d.img_size,
        test_size=tuple(a.test_size),
        train_scale=tuple(a.train_scale),
        flip=d.flip,
        max_boxes=a.max_boxes,
        num_classes=config.model.num_classes,
        box_jitter=a.box_jitter,
        score_threshold=a.score_threshold,
        fps=a.fps,
    )


def open_clips(config, split: str) -> ava_clips.AvaClips:
    """The keyframes of `split` ("train": ground truth; "val": the boxes of ava.test_boxes)
    whose videos can be read (what was left out is logged and in `.summary()`)."""
    boxes = config.ava.test_boxes
    if boxes not in TEST_BOXES:
        raise ValueError(f"ava.test_boxes must be one of {TEST_BOXES}, got {boxes!r}")
    return ava_clips.open_split(
        config.data.data_root,
        split,
        clip_config(config),
        train=split == "train",
        boxes=boxes,
        videos=config.ava.videos or None,
        detections=config.ava.get("detections") or None,
    )


def train_dataset(config, clips: ava_clips.AvaClips):
    """This host's share of each global batch of data.batch_size keyframes, endless."""
    host, hosts = pipeline.grain_shard()
    d = config.data
    return ava_clips.train_dataset(
        clips, d.batch_size, config.seed, num_threads=d.num_threads,
        num_workers=d.num_workers, host=host, hosts=hosts,
    )  # fmt: skip


def eval_dataset(config, clips: ava_clips.AvaClips):
    """One pass over the keyframes, this host's share of each global batch of
    eval.batch_size (each keyframe once over all hosts; invalid padding at the end)."""
    host, hosts = pipeline.grain_shard()
    d = config.data
    return ava_clips.eval_dataset(
        clips, config.eval.batch_size, num_threads=d.num_threads,
        num_workers=d.num_workers, host=host, hosts=hosts,
    )  # fmt: skip


def steps_per_epoch(config, clips: ava_clips.AvaClips) -> int:
    """Training steps in one pass over the training keyframes."""
    return max(1, len(clips) // config.data.batch_size)


def evaluation_files(config) -> dict[str, str]:
    """The validation split's ground truth, label map and excluded timestamps ("" when the
    root has no excluded-timestamps file)."""
    root = config.data.data_root
    excluded = storage.join(root, ava_clips.excluded_name("val"))
    return {
        "ground_truth": storage.join(root, ava_clips.ground_truth_name("val")),
        "label_map": storage.join(root, ava_clips.LABEL_MAP),
        "excluded": excluded if storage.exists(excluded) else "",
    }


def input_paths(config) -> list[str]:
    """What an AVA run reads, for the access check before any work."""
    return [
        p for p in (config.data.data_root, config.ava.videos, config.ava.get("detections")) if p
    ]
