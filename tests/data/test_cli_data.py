"""The data commands as a user runs them: make-synthetic, data-check (with corrupt files mixed
in), make-tfds and bench-data; bad input exits 2 with the problem named."""

import json
import os
import re

import numpy as np
import pytest

from tests.data.conftest import broken_files
from vmp_jax import cli
from vmp_jax.bench import data as bench_data
from vmp_jax.experiment import REPO_ROOT, load_config

DEMO = str(REPO_ROOT / "configs" / "demo.py")


def _small(root: str, listing: str) -> list[str]:
    return [
        f"--config.data.data_root={root}",
        f"--config.data.train_list={listing}",
        f"--config.data.val_list={listing}",
        "--config.data.batch_size=4",
        "--config.data.num_workers=0",
        "--config.eval.batch_size=4",
    ]


def test_make_synthetic_then_data_check(tmp_path, capsys):
    out = str(tmp_path / "demo")
    args = ["make-synthetic", "--out", out, "--classes", "4", "--videos-per-class", "3"]
    assert cli.main([*args, "--frames", "16", "--size", "64x48", "--workers", "1"]) == 0
    assert sorted(os.listdir(out)) == ["classes.txt", "train.txt", "val.txt", "videos"]
    listing = os.path.join(out, "train.txt")
    code = cli.main(["data-check", "--config", DEMO, "--batches", "2", *_small(out, listing)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "train: 8 videos from list source" in printed
    assert "video    float32  (4, 8, 32, 32, 3)" in printed
    assert "skip events: 0; distinct unreadable files: 0" in printed and "clips/s" in printed


def test_data_check_counts_corrupt_files_by_reason(motion_dataset, tmp_path, capsys):
    bad = broken_files(str(tmp_path))
    good = os.path.join(motion_dataset, "videos", "left", "left_0003.mp4")
    listing = tmp_path / "mixed.txt"
    # the bad files listed twice: a few batches meet them again and again
    listing.write_text("".join(f"{p} 1\n" for p in [*bad.values(), *bad.values(), good, good]))
    for split in ("train", "val"):
        args = ["data-check", "--config", DEMO, "--batches", "3", "--split", split]
        assert cli.main([*args, *_small(str(tmp_path), str(listing))]) == 0
        printed = capsys.readouterr().out
        events = int(printed.split("skip events: ")[1].split(";")[0])
        assert events >= 8  # every listing of a bad file is a skip event
        assert "distinct unreadable files: 4" in printed
        lines = printed.splitlines()
        for reason, path in bad.items():
            assert sum(line.startswith(f"  {path}: {reason}") for line in lines) == 1
            assert f"  1 x {reason}" in lines


def test_make_tfds_builds_a_readable_dataset(motion_dataset, tmp_path, capsys):
    train = os.path.join(motion_dataset, "train.txt")
    val = os.path.join(motion_dataset, "val.txt")
    args = ["make-tfds", "--config", DEMO, "--out", str(tmp_path), "--name", "motion"]
    overrides = [f"--config.data.train_list={train}", f"--config.data.val_list={val}"]
    assert cli.main([*args, f"--config.data.data_root={motion_dataset}", *overrides]) == 0
    assert "video_list/motion" in capsys.readouterr().out
    tfds_args = [
        "--config.data.source=tfds",
        "--config.data.tfds_name=video_list/motion",
        f"--config.data.data_root={tmp_path}",
        "--config.data.num_workers=0",
    ]
    assert cli.main(["data-check", "--config", DEMO, "--batches", "1", *tfds_args]) == 0
    assert "train: 24 videos from tfds source" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["make-synthetic", "--out", "x", "--classes", "40"], "--classes must be between 2 and 16"),
        (["data-check", "--config", DEMO, "--config.data.train_list=/nope.txt"], "/nope.txt"),
        (["data-check", "--config", DEMO, "--config.data.samplng=dense"], "data.samplng"),
        (["data-check", "--config", DEMO, "--config.data.crop=centre"], "data.crop must be"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_list_line_exits_2_with_file_and_line(tmp_path, capsys):
    listing = tmp_path / "bad.txt"
    listing.write_text("a.mp4 0\nb.mp4 zero\n")
    assert cli.main(["data-check", "--config", DEMO, f"--config.data.train_list={listing}"]) == 2
    assert f"{listing}:2: expected" in capsys.readouterr().err


def test_bench_data_times_each_source(tmp_path, monkeypatch, capsys):
    """A row per source and worker count, the frame store's ratio to the video files from the
    same run, the CPU breakdown, and the same figures as JSON."""
    monkeypatch.setattr(bench_data, "VIDEO", dict(frames=24, height=48, width=64, fps=12))
    monkeypatch.setattr(bench_data, "IN_FLIGHT", 1)  # warm-up batches (the timing's own test)
    listed, measure = [], bench_data.measure  # the rows read a list as long as a dataset's
    monkeypatch.setattr(bench_data, "measure", lambda *a: listed.append(len(a[1])) or measure(*a))
    args = ["bench-data", "--folder", str(tmp_path), "--workers", "0", "--batches", "1"]
    small = [
        "--batch-size",
        "4",
        "--config.data.img_size=32",
        "--config.model.img_size=32",
        "--config.data.short_side=32",
    ]
    assert cli.main([*args, *small]) == 0
    printed = capsys.readouterr().out.splitlines()
    video = [r.split("|") for r in printed if r.startswith("| video | host | 0 |")]
    frames = [r.split("|") for r in printed if r.startswith("| frames | host | 0 |")]
    assert len(video) == len(frames) == 1
    assert float(video[0][4]) > 0 and float(frames[0][4]) > 0
    ratio = float(frames[0][4]) / float(video[0][4])
    assert abs(float(frames[0][6]) - ratio) < 0.01 + 0.01 * ratio  # from the same run
    rows = [r for r in printed if r.startswith(("| video | ", "| frames | ", "| video, full"))]
    assert len(rows) == 7  # 4 variants and the breakdown (with video, full decode)
    assert "onto canvas: with augment on device, what follows the read" in "\n".join(printed)
    assert listed == [bench_data.LISTED] * 4
    (headline,) = [r for r in printed if r.startswith("the frame store with augment on device")]
    whole = [r.split("|") for r in printed if r.startswith("| frames | device | 0 |")]
    shown = re.search(r"pipeline 0 workers (\d+) \(", headline)  # rounded from the unrounded
    assert shown and abs(int(shown[1]) - float(whole[0][5])) <= 0.55  # figure the row shows to .1
    assert "; the loader's own stages " in headline

    assert cli.main([*args, *small, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    keys = {"source", "augment_on", "workers", "clips_per_s", "clips_per_s_per_core"}
    assert [(r["source"], r["augment_on"]) for r in result["rows"]] == list(bench_data.VARIANTS)
    assert all(keys <= set(r) and r["clips_per_s"] > 0 for r in result["rows"])
    assert [b["source"] for b in result["breakdown"]] == ["video", "frames", "video, full decode"]
    assert all(b["decode"] > 0 and b["onto canvas"] > 0 for b in result["breakdown"])
    assert result["device_augment_ms_per_clip"] > 0


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_bench_data_times_after_every_worker_has_started(monkeypatch, workers):
    """The timing starts after one batch per worker (their start-up is not the pipeline's
    work), the buffers filled (`settle`: the batch slots made) and emptied again, and the
    batches timed are the ones counted."""
    taken, timed = [], []

    class Stream:
        def __iter__(self):
            return self

        def __next__(self):
            taken.append(1)
            return {"video": np.zeros((4, 1))}

        def close(self):
            pass

    def cpu_seconds():  # a CPU-second per batch taken
        timed.append(len(taken))
        return float(len(taken))

    monkeypatch.setattr(bench_data.pipeline, "train_dataset", lambda *_: Stream())
    monkeypatch.setattr(bench_data, "cpu_seconds", cpu_seconds)
    config = load_config(DEMO, [f"data.num_workers={workers}"])
    _, per_core, _ = bench_data.measure(config, None, batches=3)
    started = max(1, workers)  # a batch per worker; then settled, emptied and timed
    drained = started + bench_data.IN_FLIGHT * started
    assert timed == [0, 0, started, started, drained, drained + 3]
    assert per_core == 4  # 3 batches of 4 clips in 3 (fake) CPU-seconds


def test_bench_data_rows_wait_for_the_work_of_the_row_before(monkeypatch):
    """`settle` (before each row) returns once the CPU time stops growing: a closed row's
    threads finishing their batches are not charged to the next row."""
    readings = iter([0.0, 0.5, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr(bench_data, "cpu_seconds", lambda: next(readings))
    bench_data.settle(interval=0.001, timeout=60)
    assert list(readings) == [1.0, 1.0]  # read until an interval without CPU time


class _Store:
    """What opening_line reads of a frame store: its videos' count and its summary."""

    def __init__(self, videos: int, summary: dict):
        self.videos, self.summary = videos, summary

    def __len__(self):
        return self.videos


def test_bench_data_bucket_says_what_opening_the_store_cost():
    """`vmp bench-data --bucket`'s first line: the requests counted, the store's size, and
    why that many (an index: a constant; a store packed before it: one per shard)."""
    from vmp_jax.bench import bucket

    indexed = _Store(40, {"shards": [{}, {}, {}], "index": {"file": "index.json", "sha1": "0"}})
    line = bucket.opening_line(indexed, 2)
    assert line == (
        "opening the frame store (40 videos, 3 shards): 2 requests (store.json and its index, "
        "whatever the number of shards)"
    )
    line = bucket.opening_line(_Store(5, {"shards": [{}]}), 2)
    assert line == (
        "opening the frame store (5 videos, 1 shard): 2 requests (packed before the index: "
        "store.json and one per shard)"
    )
