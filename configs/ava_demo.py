"""The AVA demo: a small VideoMambaPro detector on the generated AVA-like dataset, on CPU.

vmp make-synthetic --kind ava --out data/ava_demo
vmp train --config configs/ava_demo.py --workdir runs/ava_demo --config.data.data_root=data/ava_demo
vmp eval --config configs/ava_demo.py --checkpoint runs/ava_demo \
    --config.data.data_root=data/ava_demo [--config.ava.test_boxes=gt]

Everything but the data root comes from AVA's file names in its layout (ava_inputs). The
frames (160 x 120) are fitted into 96 x 128 at evaluation (scale 0.8, exact) and cropped to
96 px squares in training; 8 px patches give a 12 x 16 feature map, so that an actor (a
40 px band: 32 px here) spans 4 cells of the ROIAlign. 4 frames 4 apart (0.4 s in all)
see the waving arm and the walk. Trained from scratch (no init_from, no layer decay).
docs/detection.md gives the figures of this config (frame-mAP, the shuffled-box control).
"""

from configs import common


def get_config():
    config = common.ava_experiment(
        "vmp",
        "ti",
        frames=4,
        img_size=96,
        patch_size=8,
        embed_dim=96,
        depth=4,
        d_state=8,
        dt_rank=6,
        drop_path_rate=0.0,
        head_dropout=0.0,
        dtype="float32",  # on CPU, float32 is the fast one
    )
    config.data.data_root = "data/ava_demo"
    config.data.batch_size = 16
    config.data.num_workers = 0
    config.data.sampling_rate = 4
    config.ava.test_size = (96, 128)
    config.ava.train_scale = (1.0, 1.1)
    config.ava.max_boxes = 8
    config.ava.expects_init_from = False  # from scratch, on purpose
    config.optim.base_lr = 2e-3  # the peak: the lr is not rescaled for this small batch
    config.optim.lr_batch_base = 16
    config.optim.grad_clip = 1.0
    config.optim.weight_decay = 0.05
    config.optim.epochs = 20
    config.optim.warmup_epochs = 1
    config.optim.layer_decay = 1.0
    config.eval.batch_size = 16
    config.train.eval_every = 5
    config.train.log_every = 10
    return config
