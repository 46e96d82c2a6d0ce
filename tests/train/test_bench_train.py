"""`vmp bench-train`: the real train step on in-memory synthetic clips, timed and logged."""

import json
import os
import re

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
    argv += ["--out", out] + [f"--config.{s}" for s in [*SMALL, "model.depth=2"]]
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


def _figures(text: str, row: str) -> list[float]:
    """The numbers of a table row ("  step ms (median)  6.3  9.3" -> [6.3, 9.3])."""
    line = next(line for line in text.splitlines() if line.startswith(f"  {row}  "))
    return [float(x) for x in line[len(row) + 2 :].split()]


def test_bench_train_times_an_ava_detector_beside_its_classification_twin(capsys):
    """An AVA config: the detector's and the classification model's step at the same clip
    shape, a column each, and the ratio of the median step times the two columns show."""
    tiny = ["model.num_frames=2", "model.img_size=32", "model.embed_dim=16", "model.depth=1"]
    tiny += ["model.d_state=4", "model.dt_rank=2", "data.batch_size=8", "ava.max_boxes=3"]
    argv = ["bench-train", "--config", str(REPO_ROOT / "configs" / "ava_demo.py")]
    argv += ["--steps", "4", "--warmup", "1", "--batches", "1"] + [f"--config.{s}" for s in tiny]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[1].split() == ["head", "detection", "classification"]
    assert _figures(text, "timed steps") == [3, 3]
    assert len(_figures(text, "compiled temp GiB")) == 2
    detection_ms, classify_ms = _figures(text, "step ms (median)")
    for ms, clips_per_s in zip((detection_ms, classify_ms), _figures(text, "clips/s"), strict=True):
        # 8 clips / median step, within the rounding of the figures shown (0.1 ms, <= 0.1 clip/s)
        assert 8e3 / (ms + 0.05) - 0.05 <= clips_per_s <= 8e3 / (ms - 0.05) + 0.05
    ratio, added = re.search(
        r"detection / classification step time: (\S+) \(the head adds (\S+)%\)", text
    ).groups()
    # The ratio of the unrounded medians: within the rounding of the figures shown.
    low, high = (
        (detection_ms - 0.05) / (classify_ms + 0.05),
        (detection_ms + 0.05) / (classify_ms - 0.05),
    )
    assert low - 5e-4 <= float(ratio) <= high + 5e-4
    assert abs(float(added) - 100 * (float(ratio) - 1)) <= 0.1  # ratio to 0.001, % to 0.1


def test_bench_train_rejects_fewer_steps_than_warmup(capsys):
    assert cli.main(["bench-train", "--config", DEMO, "--steps", "2", "--warmup", "3"]) == 2
    assert "--steps (2) must exceed --warmup (3)" in capsys.readouterr().err


def test_bench_compile_times_both_layer_layouts(capsys):
    argv = ["bench-compile", "--config", DEMO, "--batch", "8", "--config.model.depth=2"]
    assert cli.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()]
    rows = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows if len(r) == 7}
    assert rows.keys() >= {"looped", "scanned"}
    assert rows["looped"][4] == "1.00"
    for layout in ("looped", "scanned"):
        trace, lower, compile_s, total = (float(x) for x in rows[layout][:4])
        assert min(trace, lower, compile_s) >= 0 and total > 0
        assert abs(trace + lower + compile_s - total) <= 0.2  # rounding of each to 0.1
    assert cli.main(["bench-compile", "--config", DEMO, "--repeats", "0"]) == 2
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err


def test_bench_compile_times_a_real_compile_under_a_persistent_cache(tmp_path):
    """A user's $JAX_COMPILATION_CACHE_DIR (the test session's own cache, here a fresh one)
    would turn a second compile into a load: `compile_once` switches it off while it times,
    so it writes nothing there, and on again after."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from vmp_jax.bench import compile as bench_compile

    cache = tmp_path / "cache"
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    compilation_cache.reset_cache()
    try:
        config = load_config(DEMO, [*SMALL, "model.depth=1"])
        assert bench_compile.compile_once(config).compile_s > 0
        assert not cache.exists() or not any(cache.iterdir())
        assert jax.config.jax_enable_compilation_cache  # on again
        jax.jit(lambda x: x * 3.0).lower(jax.numpy.ones(3)).compile()
        assert any(cache.iterdir())  # the cache itself works: only the timing skipped it
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
