"""The demo: a small VideoMambaPro on the generated motion dataset, trained on CPU in minutes.

make demo      (= vmp make-synthetic --videos-per-class 600, vmp train, vmp eval on this config)

32 px frames (2 x 2 patches, 33 tokens) keep a step fast enough for thousands of steps on a
CPU. Telling a motion from its time reversal (left from right, up from down) needs the order of
the frames, which the bidirectional scan has to learn; on the 2-core machine this config reaches
83% validation top-1 at step 600, 99% at 1200 and 100% from 1800 (README, "The demo").
"""

from configs import common


def get_config():
    config = common.experiment(
        "ucf101",
        "vmp",
        "ti",
        frames=8,
        img_size=32,
        embed_dim=96,
        depth=4,
        d_state=8,
        dt_rank=6,
        num_classes=4,
        drop_path_rate=0.0,
        head_dropout=0.0,
        dtype="float32",  # on CPU, float32 is the fast one
    )
    config.data.name = "synthetic"
    config.data.data_root = "data/demo"
    config.data.train_list = "data/demo/train.txt"
    config.data.val_list = "data/demo/val.txt"
    config.data.batch_size = 16
    config.data.num_workers = 2
    config.data.flip = False  # left and right are different classes
    config.data.crop_scale = (0.8, 1.0)  # keep the moving shapes in the crop
    config.data.randaug_n = 0
    config.data.erase_prob = 0.0
    config.data.mixup = config.data.cutmix = 0.0
    config.data.repeated_aug = 1
    config.optim.base_lr = 2e-3  # the peak: the lr is not rescaled for this small batch
    config.optim.lr_batch_base = 16
    config.optim.grad_clip = 1.0
    config.optim.epochs = 20
    config.optim.warmup_epochs = 1
    config.eval.num_clips = 1
    config.eval.num_crops = 1
    config.train.eval_every = 5
    return config
