"""`vmp bench-train`: the real train step on in-memory synthetic clips, timed and logged."""

import json
import os

import numpy as np

from vmp_jax import cli
from vmp_jax.bench import train as bench_train
from vmp_jax.experiment import REPO_ROOT, load_config

DEMO = str(REPO_ROOT / "configs" / "demo.py")
SMALL = ["data.batch_size=8", "data.img_size=32", "model.img_size=32"]


def test_synthetic_batches_are_normalised_learnable_clips():
    config = load_config(DEMO, SMALL)
    batches = bench_train.synthetic_batches(config, batches=2, classes=3, seed=1)
    assert len(batches) == 2
    for b in batches:
        assert b["video"].shape == (8, config.data.num_frames, 32, 32, 3)
        assert b["video"].dtype == np.float32 and abs(float(b["video"].mean())) < 3
        assert set(b["label"].tolist()) <= {0, 1, 2}
    assert not np.array_equal(batches[0]["video"], batches[1]["video"])


def test_bench_train_cli_times_steps_and_the_loss_falls(tmp_path, capsys):
    out = str(tmp_path / "bench")
    argv = ["bench-train", "--config", DEMO, "--steps", "24", "--warmup", "2", "--batches", "1"]
    argv += ["--out", out] + [f"--config.{s}" for s in SMALL]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "global batch 8" in text and "clips/s" in text and "timed steps         22" in text
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert all(r["step_ms"] > 0 and np.isfinite(r["loss"]) for r in records)
    # One batch, repeated: the real optimiser update must fit it.
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0


def test_bench_train_rejects_fewer_steps_than_warmup(capsys):
    assert cli.main(["bench-train", "--config", DEMO, "--steps", "2", "--warmup", "3"]) == 2
    assert "--steps (2) must exceed --warmup (3)" in capsys.readouterr().err
