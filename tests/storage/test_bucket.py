"""Data and outputs in a bucket (a GCS emulator on 127.0.0.1, the `gcs` fixture): a frame store
built into the bucket and a video list read from it give the local batches; `vmp data-check`
scans a bucket; metrics and TensorBoard events are uploaded whole at a bounded rate; and a URL
that cannot be used (no bucket, no object, credentials refused) is named with its cause in
seconds, before any work. Training, resuming and evaluating in a bucket: tests/train/
test_train_cli.py."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from tests.data.test_pipeline import _config, _take
from vmp_jax import cli, storage
from vmp_jax.data import decode, frame_packing, frame_store, listing, pipeline
from vmp_jax.data.encode import REPRODUCIBLE_X264, write_video
from vmp_jax.experiment import REPO_ROOT
from vmp_jax.train import metrics_log

DEMO = str(REPO_ROOT / "configs" / "demo.py")


def _batches(root: str, train_list: str, **settings) -> list[dict]:
    config = _config(root, **{"data.randaug_n": 2, "data.erase_prob": 0.0, **settings})
    config.data.train_list = train_list
    return _take(pipeline.train_dataset(config), 2)


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_a_video_list_and_a_frame_store_in_the_bucket_give_the_local_batches(
    motion_dataset, bucket_dataset, tmp_path, capsys
):
    local_list = os.path.join(motion_dataset, "train.txt")
    remote_list = f"{bucket_dataset}/train.txt"
    _assert_same_batches(
        _batches(motion_dataset, local_list), _batches(bucket_dataset, remote_list)
    )
    # make-frames from the bucket's list into the bucket (built locally shard by shard, then
    # uploaded), against the same packing done locally
    argv = ["make-frames", "--data-root", bucket_dataset, "--videos-per-shard", "8"]
    argv += ["--workers", "1", "--list", remote_list]
    assert cli.main([*argv, "--out", "gs://vmp-test/store"]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "store")]) == 0
    names = sorted(storage.listdir("gs://vmp-test/store"))
    assert names == sorted(os.listdir(tmp_path / "store")), names
    assert len(frame_store.open_store("gs://vmp-test/store")) == 24
    frames = {"data.source": "frames"}
    _assert_same_batches(
        _batches(motion_dataset, str(tmp_path / "store"), **frames),
        _batches(bucket_dataset, "gs://vmp-test/store", **frames),
    )
    # data-check reads the same list from the bucket and finds every video readable
    assert (
        cli.main(["data-check", "--scan", "--list", remote_list, "--data-root", bucket_dataset])
        == 0
    )
    assert "unreadable: 0 of 24 videos" in capsys.readouterr().out


def test_opening_a_frame_store_in_the_bucket_costs_two_requests_whatever_its_shards(
    gcs, motion_dataset, tmp_path
):
    """store.json and the index: the same two requests for 2 shards as for 6 (a store packed
    before the index, still readable, costs one more per shard: 3,750 for Kinetics-400)."""
    items = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    opened = {}
    for per_shard in (3, 1):
        local, remote = str(tmp_path / f"s{per_shard}"), f"gs://vmp-test/shards-{per_shard}"
        settings = frame_packing.Settings(videos_per_shard=per_shard)
        frame_packing.pack(items[:6], local, settings, workers=1)
        storage.upload(local, remote)
        gcs.reset_stats()
        store = frame_store.open_store(remote)
        opened[6 // per_shard] = gcs.stats()["requests"], [v.video_id for v in store]
        # the same store packed before the index: store.json names none, index.json absent
        summary = frame_store.read_json(f"{remote}/store.json")
        del summary["index"]
        frame_store.write_json(f"{remote}/store.json", summary)
        storage.filesystem(remote)[0].rm(f"{remote}/index.json")
        gcs.reset_stats()
        old = frame_store.open_store(remote)
        assert [v.video_id for v in old] == opened[6 // per_shard][1]
        assert gcs.stats()["requests"] == 1 + 6 // per_shard
    assert opened[2][0] == opened[6][0] == 2, opened
    assert opened[2][1] == opened[6][1] == [i.video_id for i in items[:6]]


def test_metrics_are_uploaded_whole_at_a_bounded_rate_and_kept_across_resumes(gcs):
    workdir = "gs://vmp-test/metrics-run"
    log = metrics_log.MetricsLog(workdir, sync_seconds=3600)
    gcs.reset_stats()
    for step in range(1, 51):
        log.write(step, "train", {"loss": 1.0 / step})
    assert gcs.stats()["requests"] == 0  # 50 records, nothing sent before the sync point
    log.sync()
    lines = storage.read_text(f"{workdir}/metrics.jsonl").splitlines()
    assert len(lines) == 50 and '"step": 50' in lines[-1]
    events = storage.listdir(f"{workdir}/tensorboard")
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    log.close()
    resumed = metrics_log.MetricsLog(workdir, sync_seconds=3600)  # a resumed run appends
    resumed.write(51, "val", {"top1": 0.5})
    resumed.close()  # uploads what is left
    records = metrics_log.MetricsLog(workdir).records()
    assert [r["step"] for r in records] == [*range(1, 52)] and records[-1]["split"] == "val"


@pytest.mark.parametrize(
    ("where", "cause"),
    [
        ({"workdir": "gs://no-such-bucket/run"}, "gs://no-such-bucket/run: the bucket "),
        ({"train_list": "gs://vmp-test/motion/missing.txt"}, "missing.txt: no such object"),
        ({"workdir": "gs://refused-bucket/run"}, "credentials refused (401"),
    ],
    ids=["no bucket", "no object", "credentials refused"],
)
def test_a_url_that_cannot_be_used_is_named_with_its_cause_in_seconds(
    bucket_dataset, tmp_path, capsys, where, cause
):
    workdir = where.get("workdir", str(tmp_path / "run"))
    argv = ["train", "--config", DEMO, "--workdir", workdir]
    argv += [f"--config.data.data_root={bucket_dataset}"]
    argv += [f"--config.data.train_list={where.get('train_list', bucket_dataset + '/train.txt')}"]
    argv += [f"--config.data.val_list={bucket_dataset}/val.txt"]
    started = time.monotonic()
    assert cli.main(argv) == 2
    assert time.monotonic() - started < 10  # gcsfs alone retries a refused credential 35 s
    error = capsys.readouterr().err
    assert cause in error, error
    assert not os.path.exists(tmp_path / "run")  # stopped before any work


def test_the_emulator_lists_offset_ranges_counts_requests_and_refuses_credentials(gcs):
    """What the tests rely on beyond the stub: listings cut to [startOffset, endOffset) (else
    TensorStore's prefix delete would take every object), a request count, and a 401."""
    for name in ("r/a", "r/b", "r/c", "r/d"):
        storage.write_text(f"gs://vmp-test/{name}", name)
    gcs.reset_stats()
    query = urllib.parse.urlencode({"prefix": "r/", "startOffset": "r/b", "endOffset": "r/d"})
    with urllib.request.urlopen(f"{gcs.url}/storage/v1/b/vmp-test/o?{query}", timeout=5) as r:
        listed = [item["name"] for item in json.loads(r.read())["items"]]
    assert listed == ["r/b", "r/c"]
    assert gcs.stats()["requests"] == 1
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{gcs.url}/storage/v1/b/refused-x/o", timeout=5)
    assert refused.value.code == 401


def test_a_video_in_the_bucket_is_read_in_ranges_or_whole_and_decodes_as_the_local_file(
    gcs, tmp_path, monkeypatch, seed
):
    """Range reads (4 KiB blocks for a 176x144 video, as 256 KiB are for a K400 one): two
    frames fetch a part of the object (the headers, the first frame, which opening decodes,
    and the group of pictures they are in), frames spanning it fetch it whole in one request after
    the header's blocks; either way the frames equal the local file's, bit for bit."""
    monkeypatch.setattr(decode, "REMOTE_BLOCK_BYTES", 4096)
    monkeypatch.setattr(decode, "REMOTE_WHOLE_BYTES", 0)
    local, remote = str(tmp_path / "gop10.mp4"), "gs://vmp-test/videos/gop10.mp4"
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (300, 9, 11, 3), dtype=np.uint8).repeat(16, 1).repeat(16, 2)
    write_video(local, pixels, options={**REPRODUCIBLE_X264, "g": "10"})
    storage.upload(local, remote)
    size = os.path.getsize(local)
    for indices in ([205, 206], list(range(0, 300, 7))):
        gcs.reset_stats()
        frames, _ = decode.read_frames(remote, indices)
        sent, requests = gcs.stats()["bytes_sent"], gcs.stats()["requests"]
        np.testing.assert_array_equal(frames, decode.read_frames(local, indices)[0])
        if len(indices) == 2:
            assert sent < 0.5 * size, (sent, size)
        else:  # the header's blocks, then the whole object once, in one request
            assert size <= sent < size + 24 * 4096 and requests < 30, (sent, requests, size)
    with pytest.raises(decode.DecodeError, match="missing file"):
        decode.read_frames("gs://vmp-test/videos/no-such-video.mp4", [0])


def test_the_data_commands_check_their_urls_first(bucket_dataset, capsys):
    started = time.monotonic()
    argv = ["make-frames", "--list", f"{bucket_dataset}/train.txt"]
    argv += ["--data-root", bucket_dataset, "--out", "gs://refused-frames/store"]
    assert cli.main(argv) == 2
    assert "gs://refused-frames/store: credentials refused (401" in capsys.readouterr().err
    assert cli.main(["data-check", "--scan", "--list", "gs://no-such-bucket/train.txt"]) == 2
    assert "gs://no-such-bucket/train.txt: the bucket 'no-such-bucket' does not exist" in (
        capsys.readouterr().err
    )
    assert time.monotonic() - started < 10


def test_nothing_the_tests_start_reaches_beyond_the_loopback():
    """The suite's network guard, in this process and in a process started from it (through
    sitecustomize on PYTHONPATH): 192.0.2.1 (TEST-NET-1) is refused before any packet."""
    with pytest.raises(ConnectionRefusedError, match="network guard refused"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    code = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "network guard refused" in done.stderr, done.stderr
