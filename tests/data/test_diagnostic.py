"""The diagnostic tasks: the label lives in the deciding patches alone (a model-free oracle on
them is always right; the two labels from one seed differ only there; swapping their content
swaps the answer), the token geometry the knobs promise, and bad settings."""

import os

import numpy as np
import pytest

from vmp_jax import cli
from vmp_jax.data import diagnostic
from vmp_jax.data.sources import read_list_file

TASKS = [
    diagnostic.Task("decay", 3),
    diagnostic.Task("contradiction", 0),
    diagnostic.Task("contradiction", 6),
]


def _inside(task: diagnostic.Task, shape) -> np.ndarray:
    """bool (T, S, S): the deciding boxes."""
    mask = np.zeros(shape[:3], bool)
    for frame, top, left, h, w in task.deciding_boxes():
        mask[frame, top : top + h, left : left + w] = True
    return mask


@pytest.mark.parametrize("task", TASKS, ids=lambda t: f"{t.name}{t.knob}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_labels_differ_only_in_the_deciding_patches(task, seed):
    videos = [task(label, np.random.default_rng(seed)) for label in (0, 1)]
    assert videos[0].shape == (task.num_frames, 32, 32, 3)
    differs = np.any(videos[0] != videos[1], axis=-1)  # (T, S, S)
    inside = _inside(task, videos[0].shape)
    assert not differs[~inside].any()  # nothing outside depends on the label
    assert differs[inside].any()
    assert [diagnostic.oracle(task, v) for v in videos] == [0, 1]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: f"{t.name}{t.knob}")
def test_swapping_the_deciding_content_swaps_the_answer(task):
    a, b = (task(label, np.random.default_rng(5 + label)) for label in (0, 1))
    inside = _inside(task, a.shape)
    a[inside], b[inside] = b[inside].copy(), a[inside].copy()
    assert diagnostic.oracle(task, a) == 1 and diagnostic.oracle(task, b) == 0


@pytest.mark.parametrize("task", TASKS, ids=lambda t: f"{t.name}{t.knob}")
def test_the_oracle_reads_every_encoded_video_right(task, tmp_path):
    lists = diagnostic.make_dataset(
        diagnostic.Spec(str(tmp_path), task, videos_per_class=6), workers=1
    )
    items = read_list_file(lists["train"], str(tmp_path)) + read_list_file(
        lists["val"], str(tmp_path)
    )
    assert len(items) == 12 and sorted({i.label for i in items}) == [0, 1]
    for item in items:
        video = item.read(np.arange)  # every frame, decoded from H.264
        assert video.shape[0] == task.num_frames
        assert diagnostic.oracle(task, video) == item.label, item.name


def test_token_geometry():
    decay = diagnostic.Task("decay", 32)
    assert decay.per_frame == 16 and decay.distance_to_cls() == 1 + 31 * 16  # the last frame
    gap = diagnostic.Task("contradiction", 3)
    assert gap.frames_ab == (0, 4) and gap.distance_to_cls() == 1 + 4 * 16  # B's first token
    assert [box[0] for box in gap.deciding_boxes()] == [0, 4]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="blur", knob=4), "--task must be one of"),
        (dict(name="decay", knob=1), "--knob must be at least 2"),
        (dict(name="decay", knob=4, size=36), "multiple of the patch size"),
        (dict(name="contradiction", knob=7), "must be at most 6"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        diagnostic.Task(**kwargs)


def test_make_synthetic_writes_a_task(tmp_path, capsys):
    out = str(tmp_path / "decay")
    argv = ["make-synthetic", "--task", "decay", "--knob", "2", "--videos-per-class", "3"]
    assert cli.main(argv + ["--out", out, "--workers", "1"]) == 0
    assert (
        "2 frames of 16 patches, the deciding tokens from 17 tokens after CLS"
        in capsys.readouterr().out
    )
    with open(os.path.join(out, "classes.txt")) as f:
        assert f.read().split() == ["red", "blue"]
    assert cli.main(["make-synthetic", "--task", "decay", "--out", out]) == 2
    assert "--task decay needs --knob" in capsys.readouterr().err
