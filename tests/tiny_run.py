"""The tiny training run of the end-to-end tests: the demo config shrunk to a 2-block model on
4-frame 32 px clips of the session's generated dataset (`motion_dataset`: 24 train videos,
3 steps an epoch at batch 8), checkpointing every 2 steps and logging every step."""

import os


def tiny_overrides(root: str, **extra) -> list[str]:
    """--config.KEY=VALUE overrides for configs/demo.py; `extra` adds or replaces keys
    (dots written as __, e.g. optim__epochs=2)."""
    settings = {
        "data.data_root": root,
        "data.train_list": os.path.join(root, "train.txt"),
        "data.val_list": os.path.join(root, "val.txt"),
        "data.num_workers": 0,
        "data.batch_size": 8,
        "data.num_frames": 4,
        "model.num_frames": 4,
        "data.img_size": 32,
        "model.img_size": 32,
        "data.short_side": 32,
        "model.depth": 2,
        "model.embed_dim": 32,
        "model.d_state": 4,
        "model.dt_rank": 2,
        "model.drop_path_rate": 0.1,  # random streams must advance alike too
        "optim.epochs": 4,
        "train.save_every": 2,
        "train.log_every": 1,
    }
    settings |= {key.replace("__", "."): value for key, value in extra.items()}
    return [f"--config.{k}={v}" for k, v in settings.items()]
