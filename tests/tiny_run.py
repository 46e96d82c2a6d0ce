"""The tiny training run of the end-to-end tests: the demo config shrunk to a 2-block model on
4-frame 32 px clips of the session's generated dataset (`motion_dataset`: 24 train videos,
3 steps an epoch at batch 8), checkpointing every 2 steps and logging every step; the state
a run ends with, read back for comparing runs leaf by leaf; the steps saved in a workdir
(local or in a bucket); and the hook that preempts an
evaluation of it."""

import itertools
import os
import signal
import time

import jax
import numpy as np

from vmp_jax import storage
from vmp_jax.engine import steps
from vmp_jax.engine.checkpoint import restore_state
from vmp_jax.train import loop


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


def complete_steps(workdir: str) -> list[int]:
    """The steps saved completely under WORKDIR/checkpoints: locally Orbax renames a step's
    directory when it is complete; in a bucket it writes `commit_success.txt` last."""
    checkpoints = storage.join(workdir, "checkpoints")
    if not storage.isdir(checkpoints):
        return []
    saved = [int(s) for s in storage.listdir(checkpoints) if s.isdigit()]
    if not storage.is_url(workdir):
        return saved
    return [s for s in saved if storage.exists(f"{checkpoints}/{s}/commit_success.txt")]


def as_numpy(x) -> np.ndarray:
    """An array as numpy; a PRNG key array as its key data (keys have no numpy form)."""
    is_key = jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(x) if is_key else x)


def final_state(config, workdir: str) -> tuple[list[np.ndarray], int]:
    """The leaves of the workdir's latest state as numpy, restored in this (8-device) process
    for `config`, and its step."""
    state, step = restore_state(workdir, loop.setup(config).trainer.abstract_placed())
    return [as_numpy(x) for x in jax.tree.leaves(state)], step


def sigterm_in_first_eval_step(wait_s: float = 0.0) -> None:
    """From now on in this process, `steps.make_eval_step` makes eval steps that send this
    process a real SIGTERM on their first call (a preempted host), then wait `wait_s` before
    computing (time for jax's notifier to tell the other processes)."""
    make = steps.make_eval_step

    def make_eval_step(*args, **kwargs):
        eval_step, calls = make(*args, **kwargs), itertools.count()

        def signalling(state, video):
            if next(calls) == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(wait_s)
            return eval_step(state, video)

        return signalling

    steps.make_eval_step = make_eval_step
