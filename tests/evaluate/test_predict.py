"""`vmp predict` and `Predictor`: a checkpoint trained here predicts what `vmp eval` predicts
for the same videos and views; unreadable files are reported while the others are predicted;
checkpoints of `vmp import` work too; class names come from label maps."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from tests.data.conftest import broken_files
from tests.tiny_run import tiny_overrides
from tests.train.test_train_cli import DEMO, _args
from vmp_jax import cli
from vmp_jax.data import labels, synthetic
from vmp_jax.evaluate import metrics
from vmp_jax.evaluate.predict import Predictor
from vmp_jax.experiment import load_saved_config

SIX_VIEWS = ["--config.eval.num_clips=2", "--config.eval.num_crops=3"]


@pytest.fixture(scope="module")
def trained(motion_dataset, tmp_path_factory) -> str:
    """A workdir with a 3-step checkpoint of the tiny demo model (with EMA weights)."""
    workdir = str(tmp_path_factory.mktemp("predict") / "run")
    argv = [a.replace("optim.epochs=4", "optim.epochs=1") for a in _args(motion_dataset, workdir)]
    assert cli.main(["train", *argv, "--config.optim.ema_decay=0.5"]) == 0
    return workdir


def _val_videos(root: str) -> list[tuple[str, str]]:
    """(list path, file path) of the validation videos."""
    with open(os.path.join(root, "val.txt")) as f:
        names = [line.split()[0] for line in f if line.strip()]
    return [(n, os.path.join(root, n)) for n in names]


def test_predict_equals_eval_on_the_same_views(trained, motion_dataset, tmp_path, capsys):
    eval_out = str(tmp_path / "eval")
    config_args = _args(motion_dataset, trained)[:-2]  # without --workdir
    argv = ["eval", *config_args, *SIX_VIEWS, "--checkpoint", trained, "--out", eval_out]
    assert cli.main(argv) == 0
    assert "(EMA weights)" in capsys.readouterr().out  # the run kept them; the config did not
    evaluated = metrics.read_csv(os.path.join(eval_out, "predictions.csv"))
    videos = _val_videos(motion_dataset)
    assert sorted(evaluated.video_ids.tolist()) == sorted(n for n, _ in videos)  # list paths

    out = str(tmp_path / "predicted.json")
    files = [path for _, path in videos]
    assert cli.main(["predict", "--checkpoint", trained, *SIX_VIEWS, *files, "--out", out]) == 0
    printed = capsys.readouterr()
    assert "6 view(s) per video" in printed.err and "predicted 8 of 8 videos" in printed.err
    with open(out) as f:
        predicted = {os.path.relpath(e["video"], motion_dataset): e for e in json.load(f)}
    names = labels.class_names(load_saved_config(trained))
    for vid, label, scores in zip(
        evaluated.video_ids, evaluated.labels, evaluated.scores, strict=True
    ):
        top = predicted[str(vid)]["top"]
        assert top[0]["index"] == int(np.argmax(scores)), vid
        assert top[0]["class"] == names[top[0]["index"]]
        np.testing.assert_allclose(top[0]["probability"], scores.max(), atol=1e-4)
        assert label >= 0


def test_unreadable_videos_are_reported_and_the_rest_predicted(trained, tmp_path, capsys):
    bad = broken_files(str(tmp_path))
    good = [path for _, path in _val_videos(load_saved_config(trained).data.data_root)[:2]]
    videos = [good[0], bad["missing file"], bad["truncated"], good[1]]
    out = str(tmp_path / "p.csv")
    argv = ["predict", "--checkpoint", trained, "--top-k", "2", "--views", "1", "--out", out]
    assert cli.main([*argv, *videos]) == 1
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert [line.split("  ")[0] for line in lines] == videos
    assert lines[1] == f"{bad['missing file']}  unreadable: {bad['missing file']}: missing file"
    assert f"{bad['truncated']}: truncated" in lines[2]
    assert "predicted 2 of 4 videos" in printed.err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video", "class_1", "probability_1", "class_2", "probability_2", "error"]
    assert [r[0] for r in rows[1:]] == videos
    assert rows[1][5] == "" and rows[2][1] == "" and "missing file" in rows[2][5]
    assert float(rows[1][2]) >= float(rows[1][4])


def test_predictor_api_and_list_input(trained, tmp_path, capsys):
    videos = _val_videos(load_saved_config(trained).data.data_root)[:3]
    predictor = Predictor.from_checkpoint(trained, views=1)
    results = predictor.predict([path for _, path in videos])
    assert [r.video for r in results] == [path for _, path in videos]
    for r in results:
        assert r.ok and r.probabilities.shape == (4,)
        np.testing.assert_allclose(r.probabilities.sum(), 1.0, rtol=1e-5)
    # The names the generated dataset wrote to classes.txt, in class order.
    assert predictor.class_names == synthetic.class_names(4) == ["right", "left", "down", "up"]
    root = load_saved_config(trained).data.data_root
    listed = tmp_path / "list.txt"
    listed.write_text("".join(f"{name} 0\n" for name, _ in videos))
    argv = ["predict", "--checkpoint", trained, "--views", "1", "--top-k", "1"]
    assert cli.main([*argv, "--list", str(listed), "--data-root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    for r, line in zip(results, lines, strict=True):
        i, p = r.top(1)[0]
        assert line == f"{r.video}  {predictor.class_name(i)} {p:.3f}"


def test_checkpoints_of_vmp_import_predict_the_same(trained, motion_dataset, tmp_path, capsys):
    config_args = _args(motion_dataset, trained)[:-2]  # without --workdir
    exported = str(tmp_path / "model.safetensors")
    argv = ["export", *config_args, "--checkpoint", trained, "--ema", "--out", exported]
    assert cli.main(argv) == 0
    imported = str(tmp_path / "imported")
    assert cli.main(["import", *config_args, "--weights", exported, "--out", imported]) == 0
    capsys.readouterr()
    video = _val_videos(motion_dataset)[0][1]
    original = Predictor.from_checkpoint(trained, views=1).predict([video])[0]
    again = Predictor.from_checkpoint(imported, views=1).predict([video])[0]
    np.testing.assert_allclose(again.probabilities, original.probabilities, rtol=1e-6)


def test_bad_input_is_named(trained, tmp_path, capsys):
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "none"), "v.mp4"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "checkpoints").mkdir()
    assert cli.main(["predict", "--checkpoint", str(tmp_path), "v.mp4"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", trained]) == 2
    assert "give video files, or --list FILE" in capsys.readouterr().err
    argv = ["predict", "--checkpoint", trained, "--views", "4", "v.mp4"]
    assert cli.main(argv) == 2
    assert "views must be 1" in capsys.readouterr().err
    argv = ["predict", "--checkpoint", trained, "--out", str(tmp_path / "p.txt"), "v.mp4"]
    assert cli.main(argv) == 2
    assert "--out must end in .csv or .json" in capsys.readouterr().err


def test_a_run_names_its_classes_without_its_dataset(trained, motion_dataset, tmp_path, capsys):
    """The run's classes.txt names the classes wherever the checkpoint goes: the dataset folder
    gone, from its own config.json or from --config; an explicit --labels still wins."""
    moved = tmp_path / "copied-run"
    shutil.copytree(trained, moved)
    names = synthetic.class_names(4)
    assert (moved / "classes.txt").read_text().split() == names
    saved = json.loads((moved / "config.json").read_text())
    gone = str(tmp_path / "deleted-dataset")
    saved["data"].update(data_root=gone, label_map="")
    (moved / "config.json").write_text(json.dumps(saved))
    video = str(tmp_path / "clip.mp4")
    shutil.copy(_val_videos(motion_dataset)[0][1], video)
    argv = ["predict", "--checkpoint", str(moved), "--views", "1", "--top-k", "4", video]
    for config in ([], ["--config", DEMO, *tiny_overrides(gone)]):
        assert cli.main([*argv, *config]) == 0
        shown = capsys.readouterr().out.split()[1::2]  # the video, then (class, probability)s
        assert sorted(shown) == sorted(names)
    other = tmp_path / "other.txt"
    other.write_text("w\nx\ny\nz\n")
    assert cli.main([*argv, "--labels", str(other)]) == 0
    assert sorted(capsys.readouterr().out.split()[1::2]) == ["w", "x", "y", "z"]
    config = load_saved_config_like(num_classes=4)
    assert labels.class_names(config, workdir=str(moved)) == names  # what `vmp eval` names


@pytest.mark.parametrize(
    "name,text",
    [
        ("classes.txt", "a\nb c\n\nd\n"),
        ("labels.csv", "id,name\n2,d\n0,a\n1,b c\n"),
        ("names.json", '{"a": 0, "\\"b c\\"": 1, "d": 2}'),
        ("index.json", '{"0": "a", "2": "d", "1": "b c"}'),
        ("list.json", '["a", "b c", "d"]'),
    ],
)
def test_label_map_formats(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert labels.read_label_map(str(path)) == ["a", "b c", "d"]


def test_label_map_errors(tmp_path):
    gap = tmp_path / "gap.csv"
    gap.write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(ValueError, match="indices must run 0..1 without gaps"):
        labels.read_label_map(str(gap))
    with pytest.raises(FileNotFoundError, match="label map not found"):
        labels.read_label_map(str(tmp_path / "none.txt"))
    config = load_saved_config_like(num_classes=4)
    with pytest.raises(ValueError, match="names 3 classes; the model has 4"):
        (tmp_path / "three.txt").write_text("a\nb\nc\n")
        labels.class_names(config, str(tmp_path / "three.txt"))


def load_saved_config_like(num_classes: int):
    from vmp_jax.experiment import load_config

    return load_config(DEMO, [f"model.num_classes={num_classes}"])


def test_a_runs_names_are_taken_only_from_a_run_and_where_they_fit(tmp_path, monkeypatch):
    """Outside any workdir there are no run names (never the current folder's classes.txt);
    a run's classes.txt naming another number of classes is passed over, not an error."""
    from vmp_jax.engine.checkpoint import workdir_of
    from vmp_jax.experiment import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")  # a stranger's, in the current folder
    (tmp_path / "step").mkdir()
    assert workdir_of(str(tmp_path / "step"), default=None) is None
    assert workdir_of(str(tmp_path / "step")) == "."
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert workdir_of(str(run / "checkpoints")) == str(run)
    config = load_config(DEMO, ["model.num_classes=4", f"data.data_root={tmp_path / 'gone'}"])
    assert labels.class_names(config, workdir=None) is None
    (run / "classes.txt").write_text("x\ny\nz\n")
    assert labels.class_names(config, workdir=str(run)) is None  # 3 names for 4 classes
    (run / "classes.txt").write_text("w\nx\ny\nz\n")
    assert labels.class_names(config, workdir=str(run)) == ["w", "x", "y", "z"]
