"""The generated motion dataset: class pairs are exact time reversals (frame averaging cannot
separate them), files are real H.264 video, and the list files match what was written."""

import os

import numpy as np
import pytest

from vmp_jax.data import decode, sources, synthetic


@pytest.mark.parametrize("label", [0, 2, 4, 6, 8, 14])
def test_odd_classes_are_their_pairs_played_backwards(label):
    base = synthetic.render(label, 16, 12, 32, 40, np.random.default_rng(3))
    reversed_ = synthetic.render(label + 1, 16, 12, 32, 40, np.random.default_rng(3))
    assert base.shape == (12, 32, 40, 3)
    np.testing.assert_array_equal(reversed_, base[::-1])
    # Frame averages agree exactly; the order of frames does not.
    np.testing.assert_allclose(reversed_.mean(0), base.mean(0), rtol=1e-6)
    assert not np.array_equal(reversed_, base)


def test_the_mover_moves_in_the_class_direction():
    """Class 0 ("right"): the frame-difference energy's centre of mass moves right."""
    video = synthetic.render(0, 4, 16, 64, 64, np.random.default_rng(0)).astype(np.float32)
    first, last = video[:3].mean(0), video[-3:].mean(0)
    columns = np.arange(64)
    saturation = lambda frame: (frame.max(-1) - frame.min(-1)).sum(0)  # noqa: E731
    # The mover is the most saturated object: compare where saturation gained and lost mass.
    gain = np.clip(saturation(last) - saturation(first), 0, None)
    loss = np.clip(saturation(first) - saturation(last), 0, None)
    assert (gain * columns).sum() / gain.sum() > (loss * columns).sum() / loss.sum()


def test_make_dataset_writes_videos_and_lists(tmp_path):
    spec = synthetic.Spec(
        str(tmp_path), classes=3, videos_per_class=5, frames=8, height=32, width=48
    )
    lists = synthetic.make_dataset(spec, workers=1)
    train = sources.read_list_file(lists["train"], str(tmp_path))
    val = sources.read_list_file(lists["val"], str(tmp_path))
    assert (len(train), len(val)) == (12, 3)
    assert sorted(i.label for i in val) == [0, 1, 2]
    info = decode.probe(train[0].path)
    assert (info.num_frames, info.height, info.width) == (8, 32, 48)
    names = (tmp_path / "classes.txt").read_text().split()
    assert names == ["right", "left", "down"]
    again = str(tmp_path / "again")
    synthetic.make_dataset(synthetic.Spec(again, 3, 5, 8, 32, 48), workers=1)
    for item in train[:3]:  # same seed, same files, bit for bit
        copy = os.path.join(again, os.path.relpath(item.path, tmp_path))
        with open(item.path, "rb") as a, open(copy, "rb") as b:
            assert a.read() == b.read()


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="--classes must be between 2 and 16"):
        synthetic.class_names(17)
    with pytest.raises(ValueError, match="--size must be even"):
        synthetic.make_dataset(synthetic.Spec(str(tmp_path), height=33))
