"""What a workdir keeps: the last `keep` checkpoints and the best by validation top-1."""

import os

import jax.numpy as jnp
import numpy as np

from vmp_jax.engine.checkpoint import Checkpoints, checkpoint_dir


def test_the_last_n_and_the_best_by_top1_are_kept(tmp_path):
    workdir = str(tmp_path)
    checkpoints = Checkpoints(workdir, keep=2, async_save=False)
    top1 = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4, 6: 0.5}  # the best is long past
    for step, value in top1.items():
        checkpoints.save(step, {"w": jnp.full(3, float(step))}, metrics={"top1": value})
    checkpoints.wait()
    kept = sorted(int(s) for s in os.listdir(checkpoint_dir(workdir)) if s.isdigit())
    assert kept == [2, 5, 6]
    best = checkpoints.manager.restore(2)["state"]
    np.testing.assert_array_equal(best["w"], np.full(3, 2.0))
    checkpoints.close()
