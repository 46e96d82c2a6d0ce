"""Pieces shared by the experiment configs: the schema every config has, and SPEC section 6's
recipes. An experiment file only names its dataset, model and frame count.

Sections: `model` (vmp_jax.models.ModelConfig's fields), `data`, `optim`, `eval`, `mesh`, and
for the AVA detector (`ava_experiment`) `ava`.
"""

import dataclasses
from typing import NamedTuple

import ml_collections

from vmp_jax.models.config import preset


class Dataset(NamedTuple):
    """A dataset's recipe: base lr (scaled by batch / 256; / 512 for in1k), Adam b2, batch,
    epochs (VideoMamba's released scripts), flip, frame sampling, multi-view test."""

    classes: int
    base_lr: float
    b2: float
    batch: int
    epochs: int
    flip: bool
    sampling: str
    clips: int
    crops: int


DATASETS = {
    "in1k": Dataset(1000, 5e-4, 0.999, 1024, 300, True, "image", 1, 1),
    "k400": Dataset(400, 1.5e-4, 0.99, 256, 50, True, "segment", 4, 3),
    "ssv2": Dataset(174, 1.5e-4, 0.999, 256, 35, False, "segment", 2, 3),
    "ucf101": Dataset(101, 4e-4, 0.99, 128, 50, True, "segment", 4, 3),
    "hmdb51": Dataset(51, 4e-4, 0.999, 128, 50, True, "segment", 4, 3),
}

# Per size (SPEC section 6): warm-up epochs, weight decay, head dropout, drop path, RandAugment
# (magnitude, magnitude std) as timm's rand-m{M}-mstd{S}.
SIZE_RECIPES = {
    "ti": dict(warmup=5, wd=0.1, dropout=0.1, drop_path=0.1, randaug=(7, 0.25)),
    "s": dict(warmup=5, wd=0.05, dropout=0.35, drop_path=0.35, randaug=(9, 0.5)),
    "m": dict(warmup=10, wd=0.05, dropout=0.6, drop_path=0.8, randaug=(9, 0.5)),
}


def model_section(size: str, *, pro: bool, **overrides) -> ml_collections.ConfigDict:
    """The `model` section: a preset's every field, so that any can be overridden."""
    return ml_collections.ConfigDict(dataclasses.asdict(preset(size, pro=pro, **overrides)))


def experiment(
    dataset: str, kind: str, size: str, frames: int = 8, *, img_size: int = 224, **model_overrides
) -> ml_collections.ConfigDict:
    """A full config for `dataset` with VideoMamba ("vm") or VideoMambaPro ("vmp")."""
    d, r = DATASETS[dataset], SIZE_RECIPES[size]
    image = dataset == "in1k"
    frames = 1 if image else frames
    config = ml_collections.ConfigDict()
    config.seed = 0
    model = dict(
        num_frames=frames,
        img_size=img_size,
        num_classes=d.classes,
        head_dropout=0.0 if image else r["dropout"],
        drop_path_rate=r["drop_path"],
        # Recipes compute in bfloat16 (parameters, residual stream and scan state stay
        # float32), as VideoMamba's mixed-precision runs: VMP-Ti at batch 16 on one H100 needs
        # 8.9 GiB instead of float32's 13.6 (`vmp compile train --target h100`,
        # benchmarks/RESULTS.md).
        dtype="bfloat16",
    )
    config.model = model_section(size, pro=kind == "vmp", **{**model, **model_overrides})
    config.data = data_section(dataset, d, r)
    config.optim = ml_collections.ConfigDict(
        dict(
            base_lr=d.base_lr,
            lr_batch_base=512 if image else 256,
            min_lr=1e-6,
            warmup_epochs=5 if image else r["warmup"],
            epochs=d.epochs,
            weight_decay=0.05 if image else r["wd"],
            b1=0.9,
            b2=d.b2,
            eps=1e-8,
            label_smoothing=0.1,
            grad_clip=0.0 if image else 5.0,
            accum_steps=1,
            ema_decay=0.0,
            layer_decay=1.0,  # < 1: layer-wise lr decay (fine-tuning; vmp_jax.engine.optim)
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(num_clips=d.clips, num_crops=d.crops, batch_size=16)
    )
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    # log_every: steps between logged means; save_every: extra checkpoints every N steps (0:
    # only at epoch ends); keep: last checkpoints kept besides the best; eval_every: epochs;
    # init_from: a checkpoint (e.g. of `vmp import`) whose model weights start a new run;
    # max_nonfinite: non-finite steps in a row (each skipped) that stop the run with exit code 3.
    config.train = ml_collections.ConfigDict(
        dict(log_every=20, save_every=0, keep=3, eval_every=1, init_from="", max_nonfinite=10)
    )
    return config


def data_section(dataset, d, r) -> ml_collections.ConfigDict:
    """Input pipeline settings (VideoMamba's released scripts, SPEC section 6). The frame count
    and crop size are the model's (None here, filled when the config is loaded); data.
    allow_resize lets them differ (vmp_jax.experiment.LINKED)."""
    m, mstd = r["randaug"]
    return ml_collections.ConfigDict(
        dict(
            name=dataset,
            source="list",  # list | video_folder | image_folder | tfds | frames (vmp make-frames)
            data_root="",  # list paths are relative to it; the TFDS data_dir for "tfds"
            train_list="",  # a list file; *_folder: a <class>/<file> folder; frames: a store
            val_list="",
            frame_template="img_{:05d}.jpg",  # frame-folder lines (1-based)
            tfds_name="",  # e.g. video_list/k400 (vmp make-tfds) or imagenet2012
            label_map="",  # class names (vmp_jax.data.labels); default data_root/classes.txt
            train_split="train",
            val_split="validation",
            num_frames=None,  # model.num_frames
            img_size=None,  # model.img_size
            allow_resize=False,
            sampling=d.sampling,
            sampling_rate=4,
            batch_size=d.batch,
            num_workers=8,
            num_threads=2,
            crop="random_resized",  # or multi_scale (VideoMAE)
            crop_scale=(0.08, 1.0),
            flip=d.flip,
            randaug_n=2,
            randaug_m=m,
            randaug_mstd=mstd,
            erase_prob=0.25,
            augment_on="host",  # or device: resize, flip, RandAugment, normalise, erase in the step
            canvas=None,  # augment_on=device: frames' (H, W) for the step; None: fit the store
            mixup=0.8,
            cutmix=1.0,
            mixup_switch_prob=0.5,
            repeated_aug=2,
            short_side=None,  # eval: the short side before the crops; default data.img_size
        )
    )


# AVA v2.2 fine-tuning (docs/detection.md). VideoMAE's AVA recipe (MCG-NJU/VideoMAE-Action-
# Detection, scripts/ava/videomae_vit_{small,base}_k400_pretrain+finetune/run.sh): AdamW (0.9,
# 0.999), lr 5e-4 at batch 256 (scaled by batch / 256), weight decay 0.05, 30 epochs, 5 warm-up
# epochs, drop path 0.2, layer-wise lr decay 0.75 over ViT-B's 12 blocks (0.6 for ViT-S), global
# batch 128, 16 frames at stride 4, 224 px crops; SlowFast's AVA head dropout 0.5 and box
# jitter. A block here is a Mamba block of a 24- or 32-deep stack, so the decay per block is
# the one that gives the embedding VideoMAE ViT-B's factor 0.75^13: 0.75^(12 / depth) (0.87
# for Ti and S, 0.9 for M); drop path is the size's own where lower (Ti: 0.1).
AVA_RECIPE = dict(
    base_lr=5e-4, batch=128, epochs=30, warmup=5, wd=0.05, drop_path=0.2, head_dropout=0.5
)


def ava_section(**overrides) -> ml_collections.ConfigDict:
    """The `ava` section (vmp_jax.data.ava_inputs): evaluation frames fitted into 256 x 464
    (a 16:9 frame's short side 256, as SlowFast's and VideoMAE's test scale), training at
    that scale x 1-1.25 (short side 256-320) then the 224 px crop; person detections at
    score >= 0.8 (the top box always); up to 32 boxes a clip (more is an error naming the
    keyframe)."""
    fields = dict(
        test_size=(256, 464),
        train_scale=(1.0, 1.25),
        max_boxes=32,
        box_jitter=0.05,
        score_threshold=0.8,
        test_boxes="detected",  # or gt: the ground-truth boxes at test
        videos="",  # "": data_root/videos (or a frame store of them)
        detections="",  # "": data_root/ava_val_predicted_boxes.csv (or a .csv or .pkl path)
        fps=30.0,  # AVA's timestamps: second t is frame (t - 900) x 30 of the cut
        # the recipes fine-tune a K400 backbone: training without train.init_from warns
        # (vmp_jax.train.loop.init_from_warning); False where from scratch is meant (the demo)
        expects_init_from=True,
    )
    return ml_collections.ConfigDict({**fields, **overrides})


def ava_experiment(kind: str, size: str, frames: int = 16, **model_overrides):
    """An AVA v2.2 detector (model.task "ava", 80 actions) with VideoMamba ("vm") or
    VideoMambaPro ("vmp"), the backbone from a K400 checkpoint (`train.init_from`, given on
    the command line: the classification head is left out), VideoMAE's AVA recipe above."""
    r = AVA_RECIPE
    drop_path = min(r["drop_path"], SIZE_RECIPES[size]["drop_path"])
    config = experiment("k400", kind, size, frames, **model_overrides)
    model = dict(num_classes=80, task="ava", drop_path_rate=drop_path)
    model["head_dropout"] = r["head_dropout"]
    for key, value in {**model, **model_overrides}.items():
        config.model[key] = value
    d = config.data
    d.name = "ava"
    d.sampling, d.sampling_rate = "dense", 4  # clips: T frames 4 apart around the keyframe
    d.batch_size = r["batch"]
    d.randaug_n, d.erase_prob, d.repeated_aug = 0, 0.0, 1
    d.mixup = d.cutmix = 0.0
    o = config.optim
    o.base_lr, o.lr_batch_base, o.b2 = r["base_lr"], 256, 0.999
    o.epochs, o.warmup_epochs, o.weight_decay = r["epochs"], r["warmup"], r["wd"]
    o.grad_clip, o.label_smoothing = 0.0, 0.0
    o.layer_decay = round(0.75 ** (12 / config.model.depth), 2)
    config.eval.num_clips = config.eval.num_crops = 1
    config.eval.batch_size = 16
    config.ava = ava_section()
    return config
