"""The diagnostic suite's base config: a tiny VideoMambaPro for the decay and contradiction
tasks (`vmp make-synthetic --task`, `vmp ablate --suite diagnostics`).

32 px frames in 8 px patches (16 tokens a frame) keep thousands of tokens affordable on a CPU;
no augmentation that could move or hide the deciding patches (no flip, the full frame, no
RandAugment or erasing, no mixup); frames are read one for one ("segment" sampling of a clip
exactly as long as the video). The suite sets data.*, model.num_frames and seed per run.
"""

from configs import common


def get_config():
    config = common.experiment(
        "ucf101",
        "vmp",
        "ti",
        frames=8,
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=2,
        d_state=8,
        dt_rank=4,
        num_classes=2,
        drop_path_rate=0.0,
        head_dropout=0.0,
        dtype="float32",
    )
    config.data.name = "diagnostic"
    config.data.data_root = "data/diagnostic"
    config.data.train_list = "data/diagnostic/train.txt"
    config.data.val_list = "data/diagnostic/val.txt"
    config.data.batch_size = 16
    config.data.num_workers = 0
    config.data.sampling = "segment"
    config.data.flip = False
    config.data.crop_scale = (1.0, 1.0)
    config.data.randaug_n = 0
    config.data.erase_prob = 0.0
    config.data.mixup = config.data.cutmix = 0.0
    config.data.repeated_aug = 1
    config.optim.base_lr = 2e-3
    config.optim.lr_batch_base = 16
    config.optim.grad_clip = 1.0
    config.optim.label_smoothing = 0.0
    config.optim.epochs = 3
    config.optim.warmup_epochs = 1
    config.eval.num_clips = 1
    config.eval.num_crops = 1
    config.eval.batch_size = 16
    config.train.eval_every = 1000  # the suite evaluates once, at the end
    config.train.log_every = 50
    return config
