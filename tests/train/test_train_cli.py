"""`vmp train` and `vmp eval` end to end on the generated dataset with a tiny model: the
workdir's files, the eval report, an eval stopped by SIGTERM, bad config keys stopping before
any work, a run killed with SIGKILL, or stopped with Ctrl-C (its Grain workers signalled too),
and restarted ending bit-identical to an uninterrupted one, and damaged checkpoints and failed
saves."""

import contextlib
import glob
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.shm_watch import SharedMemoryWatch
from tests.tiny_run import (
    complete_steps,
    final_state,
    sigterm_in_first_eval_step,
    tiny_overrides,
)
from vmp_jax import cli, storage
from vmp_jax.engine import checkpoint, steps
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.train import loop

DEMO = str(REPO_ROOT / "configs" / "demo.py")


def _args(root: str, workdir: str, **extra) -> list[str]:
    # 12 steps: 4 epochs of 3
    return ["--config", DEMO, *tiny_overrides(root, **extra), "--workdir", workdir]


def _final_state(root: str, workdir: str):
    argv = _args(root, workdir)
    return final_state(load_config(DEMO, [a for a in argv if a.startswith("--config.")]), workdir)


@pytest.fixture(scope="module")
def straight_run(motion_dataset, tmp_path_factory) -> tuple[str, str]:
    """An uninterrupted tiny run (12 steps), and what `vmp train` printed: the workdir the eval
    test reads and the run the SIGKILLed one must end equal to."""
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["train", *_args(motion_dataset, workdir)]) == 0
    return workdir, printed.getvalue()


def test_train_then_eval(motion_dataset, straight_run, capsys):
    workdir, printed = straight_run
    assert "val: top1" in printed
    for name in ("metrics.jsonl", "curves.png", "tensorboard", "checkpoints"):
        assert os.path.exists(os.path.join(workdir, name)), name
    kept = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert kept[-1] == 12 and len(kept) <= 4  # the last 3 and the best
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    waits = [r["input_wait"] for r in logged if r["split"] == "train"]
    assert waits and all(0 <= w <= 1 for w in waits), waits
    eval_args = [a for a in _args(motion_dataset, workdir) if a != "--workdir" and a != workdir]
    assert cli.main(["eval", *eval_args, "--checkpoint", workdir]) == 0
    out = capsys.readouterr().out
    assert "checkpoint step 12 (raw weights), 8 videos x 1 views" in out and "top-1" in out
    with open(os.path.join(workdir, "eval", "predictions.csv")) as f:
        rows = f.read().splitlines()
    assert rows[0] == "video_id,label,prediction,score_0,score_1,score_2,score_3" and len(rows) == 9
    with open(os.path.join(motion_dataset, "val.txt")) as f:
        listed = sorted(line.split()[0] for line in f if line.strip())
    assert sorted(row.split(",")[0] for row in rows[1:]) == listed  # keyed by list path


def test_a_sigterm_stops_eval_after_a_batch_writing_nothing_and_a_rerun_evaluates(
    motion_dataset, straight_run, tmp_path, monkeypatch, capsys
):
    """`vmp eval` on SIGTERM: the batch under way finishes, nothing is written, exit code 0;
    the same command then evaluates. The signal is real: the eval step sends it to this
    process on its first call. The 24 training videos as the test set: 3 batches of 8."""
    workdir, out = straight_run[0], str(tmp_path / "eval")
    argv = [a for a in _args(motion_dataset, workdir) if a not in ("--workdir", workdir)]
    argv += [f"--config.data.val_list={motion_dataset}/train.txt", "--out", out]
    with monkeypatch.context() as patch:
        patch.setattr(steps, "make_eval_step", steps.make_eval_step)  # put back afterwards
        sigterm_in_first_eval_step()
        assert cli.main(["eval", *argv, "--checkpoint", workdir]) == 0
    printed = capsys.readouterr().out
    assert "vmp eval: evaluation stopped after batch 1 (SIGTERM to a process): nothing " in printed
    assert not os.path.exists(out) and "top-1" not in printed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    assert cli.main(["eval", *argv, "--checkpoint", workdir]) == 0
    assert "24 videos x 1 views" in capsys.readouterr().out
    with open(os.path.join(out, "predictions.csv")) as f:
        assert len(f.read().splitlines()) == 25


def test_bad_config_key_stops_before_any_work(motion_dataset, tmp_path, capsys):
    workdir = str(tmp_path / "never")
    argv = ["train", *_args(motion_dataset, workdir), "--config.optim.lerning_rate=1"]
    assert cli.main(argv) == 2
    assert "optim.lerning_rate" in capsys.readouterr().err
    assert not os.path.exists(workdir)
    # A batch the 8 test devices cannot split is named, not left to XLA's sharding error.
    argv = ["train", *_args(motion_dataset, workdir), "--config.eval.batch_size=3"]
    assert cli.main(argv) == 2
    assert "eval.batch_size (3) does not split over 8 devices" in capsys.readouterr().err


def _train_until_step_4(root: str, workdir: str, workers: int = 0, **popen) -> subprocess.Popen:
    """`vmp train` of the tiny run (with `workers` Grain workers) in a subprocess, once a
    checkpoint of step 4 or later is complete."""
    args = _args(root, workdir, data__num_workers=workers)
    command = [sys.executable, "-m", "vmp_jax.cli", "train", *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, **popen)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if any(s >= 4 for s in complete_steps(workdir)):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be stopped"
    return process


def _resume_and_compare(root: str, straight: str, interrupted: str, workers: int = 0) -> None:
    assert cli.main(["train", *_args(root, interrupted, data__num_workers=workers)]) == 0
    (a, step_a), (b, step_b) = _final_state(root, straight), _final_state(root, interrupted)
    assert step_a == step_b == 12
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _kill_after_step_4_and_resume(root: str, straight: str, interrupted: str) -> None:
    """The tiny run SIGKILLed once a checkpoint of step 4 or later is complete, then resumed
    in this process: it ends bit-identical to `straight`."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = _train_until_step_4(root, interrupted, **popen)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 4 <= max(complete_steps(interrupted)) < 12
    _resume_and_compare(root, straight, interrupted)


def test_sigkill_and_resume_is_bit_identical(motion_dataset, straight_run, tmp_path):
    _kill_after_step_4_and_resume(motion_dataset, straight_run[0], str(tmp_path / "interrupted"))


def test_a_run_in_a_bucket_killed_and_resumed_ends_and_evaluates_as_the_local_run(
    motion_dataset, bucket_dataset, straight_run, tmp_path, capsys
):
    """Workdir and data in the emulator's bucket: SIGKILLed after a checkpoint and resumed,
    the run ends bit-identical to the local straight run; `vmp eval`, `vmp predict` and
    `vmp export` of it, reading from and writing to the bucket, give the local run's outputs."""
    workdir = "gs://vmp-test/run"
    _kill_after_step_4_and_resume(bucket_dataset, straight_run[0], workdir)
    local, steps_logged = straight_run[0], {}
    for run in (local, workdir):
        records = (json.loads(r) for r in storage.read_text(f"{run}/metrics.jsonl").splitlines())
        steps_logged[run] = sorted({r["step"] for r in records if r["split"] == "train"})
    assert steps_logged[workdir] == steps_logged[local] == list(range(1, 13))
    assert storage.isfile(f"{workdir}/curves.png") and storage.listdir(f"{workdir}/tensorboard")
    outputs = {}
    for run, root, out in (
        (local, motion_dataset, str(tmp_path)),
        (workdir, bucket_dataset, workdir),
    ):
        config = ["--config", DEMO, *tiny_overrides(root)]
        assert cli.main(["eval", *config, "--checkpoint", run, "--out", f"{out}/eval"]) == 0
        videos = [f"{root}/{line.split()[0]}" for line in _val_lines(root)[:3]]
        argv = ["predict", "--checkpoint", run, "--out", f"{out}/predictions.json", *videos]
        assert cli.main(argv) == 0
        argv = ["export", *config, "--checkpoint", run, "--out", f"{out}/model.safetensors"]
        assert cli.main(argv) == 0
        outputs[run] = [
            storage.read_text(f"{out}/eval/predictions.csv"),
            [e["top"] for e in json.loads(storage.read_text(f"{out}/predictions.json"))],
            storage.read_bytes(f"{out}/model.safetensors"),
        ]
    capsys.readouterr()
    assert outputs[workdir][0] == outputs[local][0]  # keyed by the lists' relative paths
    assert outputs[workdir][1] == outputs[local][1]
    assert outputs[workdir][2] == outputs[local][2]
    # keep-N and best-N as locally; a damaged latest checkpoint is moved aside in the bucket
    assert sorted(complete_steps(workdir)) == sorted(complete_steps(local))
    latest = f"{workdir}/checkpoints/12"
    fs, _ = storage.filesystem(latest)
    fs.rm(max(fs.find(f"{latest}/state"), key=fs.size))  # the largest array file
    assert cli.main(["train", *_args(bucket_dataset, workdir)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {latest} does not restore (" in out and "moved it aside" in out
    assert storage.isdir(f"{workdir}/damaged_checkpoints/12")
    assert 12 in complete_steps(workdir)  # saved again by the run resumed from step 10


def _val_lines(root: str) -> list[str]:
    return [line for line in storage.read_text(f"{root}/val.txt").splitlines() if line.strip()]


def test_a_sigterm_to_the_process_group_saves_the_step_reached_and_resumes_bit_identical(
    motion_dataset, straight_run, tmp_path
):
    """A cluster agent's SIGTERM to the whole process group, the loader with 2 Grain workers
    (as the recipes' with 8) included. The step under way finishes, a checkpoint of it is
    saved, exit code 0, no shared memory left behind (Python's resource tracker warns of what
    it still tracks; /dev/shm shows the rest, `SharedMemoryWatch`);
    the resumed run ends as the straight run without workers. (Ctrl-C's SIGINT to the group:
    the workers' side in tests/engine/test_preemption.py, the whole run in tests/multihost.)"""
    interrupted = str(tmp_path / "preempted")
    watch = SharedMemoryWatch(tmp_path / "shm")  # the run and its workers
    # the output in a file: a full pipe would block the run
    with watch, open(tmp_path / "output.txt", "w+") as output:
        popen = {"stdout": output, "stderr": subprocess.STDOUT, "start_new_session": True}
        process = _train_until_step_4(motion_dataset, interrupted, workers=2, **popen)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=300)
        output.seek(0)
        out = output.read()
    assert process.returncode == 0, out
    stopped = re.search(
        r"stopped after step (\d+) of 12 \(SIGTERM to a process\): saved (\S+);", out
    )
    assert stopped, out
    assert 4 <= int(stopped[1]) < 12
    assert stopped[2] == os.path.join(interrupted, "checkpoints", stopped[1])
    assert os.path.isdir(stopped[2])
    assert len(watch.pids()) >= 3, watch.pids()  # the run and its 2 workers, watched at least
    assert watch.left() == [], f"left in /dev/shm by the preempted run or its workers:\n{out}"
    with SharedMemoryWatch(tmp_path / "shm") as resumed:  # here, with 2 workers
        _resume_and_compare(motion_dataset, straight_run[0], interrupted, workers=2)
    assert resumed.left() == [], "left in /dev/shm by the resumed run or its workers"
    # read now: the resource tracker writes its warning after the process has exited
    assert "leaked shared_memory" not in (tmp_path / "output.txt").read_text()


def _copy_run(straight: str, tmp_path) -> str:
    copy = str(tmp_path / "copy")
    shutil.copytree(straight, copy)
    return copy


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_one_before_resumes(
    motion_dataset, straight_run, tmp_path, capsys, damage
):
    workdir = _copy_run(straight_run[0], tmp_path)
    latest = os.path.join(workdir, "checkpoints", "12")
    arrays = glob.glob(os.path.join(latest, "state", "ocdbt.process_0", "d", "*"))
    biggest = max(arrays, key=os.path.getsize)
    if damage == "deleted":
        os.remove(biggest)
    else:
        os.truncate(biggest, os.path.getsize(biggest) // 2)
    assert cli.main(["train", *_args(motion_dataset, workdir)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {latest} does not restore (" in out and "moved it aside" in out
    assert re.search(r"^resumed from .*/checkpoints/10$", out, re.M), out
    assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "12"))  # kept
    (a, step_a), (b, step_b) = (_final_state(motion_dataset, w) for w in (straight_run[0], workdir))
    assert step_a == step_b == 12
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_config_no_checkpoint_fits_is_an_error_and_moves_nothing(
    motion_dataset, straight_run, tmp_path, capsys
):
    workdir = _copy_run(straight_run[0], tmp_path)
    argv = ["train", *_args(motion_dataset, workdir), "--config.model.embed_dim=48"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    checkpoints = os.path.join(workdir, "checkpoints")
    assert f"no checkpoint under {checkpoints} restores into this run's state; the newest, " in err
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


# `vmp` in a process whose files fail to grow past a size (EFBIG), as they would on a full disk
# (a limit, not a small filesystem: no mount needed, and root is bound by it too).
LIMITED_VMP = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["vmp", *sys.argv[2:]]
runpy.run_module("vmp_jax.cli", run_name="__main__")
"""


def test_a_failed_save_stops_the_run_naming_the_directory_and_keeps_the_others(
    motion_dataset, straight_run, tmp_path
):
    workdir = _copy_run(straight_run[0], tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")
    for step in ("10", "12"):  # the run resumes from step 9 and saves next at 10
        shutil.rmtree(os.path.join(checkpoints, step))
    before = sorted(s for s in os.listdir(checkpoints) if s.isdigit())
    argv = _args(motion_dataset, workdir)  # the straight run's programs: compiled already
    limit = str(128 * 1024)  # the tiny state's largest array file is about 250 KB
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_VMP, limit, "train", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    error = re.search(
        r"^vmp train: error: saving the checkpoint of step \d+ .*$", done.stderr, re.M
    )
    assert error, done.stderr
    assert f"under {checkpoints} failed: " in error[0] and "File too large" in error[0]
    assert "the checkpoints already written are intact" in error[0]
    after = sorted(s for s in os.listdir(checkpoints) if s.isdigit())
    assert after == before
    config = load_config(DEMO, [a for a in argv if a.startswith("--config.")])
    abstract = loop.setup(config).trainer.abstract_placed()
    for step in before:
        _, restored = checkpoint.restore_state(os.path.join(checkpoints, step), abstract)
        assert restored == int(step)
