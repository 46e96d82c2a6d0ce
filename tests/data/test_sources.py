"""Sources: VideoMAE/VideoMamba list files in all three line formats, frame folders, image
folders and TFDS; malformed lines name the file and line."""

import os

import numpy as np
import pytest
from PIL import Image

from vmp_jax.data import sources, tfds_builder


def _write(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_list_file_formats(tmp_path):
    listing = _write(
        tmp_path / "list.txt",
        "# comment\n\na/x.mp4 3\nb/y y.mp4 0\nc/z.mp4,7\nframes/v1 48 2\n",
    )
    items = sources.read_list_file(listing, "/data")
    assert [type(i).__name__ for i in items] == [
        "VideoFile",
        "VideoFile",
        "VideoFile",
        "FrameFolder",
    ]
    assert [i.label for i in items] == [3, 0, 7, 2]
    # ids are the paths as the list writes them (what predictions files are keyed by)
    assert [i.video_id for i in items] == ["a/x.mp4", "b/y y.mp4", "c/z.mp4", "frames/v1"]
    assert items[1].path == "/data/b/y y.mp4"
    assert items[1].path == "/data/b/y y.mp4"
    assert (items[3].path, items[3].num_frames) == ("/data/frames/v1", 48)


@pytest.mark.parametrize("line", ["a.mp4", "a.mp4 x", "a.mp4 -1", "a.mp4,", "a.mp4 1 x", "v 0 3"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    listing = _write(tmp_path / "bad.txt", f"ok.mp4 1\n{line}\n")
    with pytest.raises(sources.ListFileError, match=rf"bad.txt:2: expected .*{line}"):
        sources.read_list_file(listing)


def test_missing_and_empty_list_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="list file not found: .*nope.txt"):
        sources.read_list_file(str(tmp_path / "nope.txt"))
    with pytest.raises(sources.ListFileError, match="no videos listed"):
        sources.read_list_file(_write(tmp_path / "empty.txt", "\n# nothing\n"))


def test_frame_folder_reads_one_based_jpegs(tmp_path):
    folder = tmp_path / "video"
    folder.mkdir()
    for i in range(1, 6):
        Image.fromarray(np.full((8, 10, 3), i * 40, np.uint8)).save(folder / f"img_{i:05d}.png")
    item = sources.FrameFolder(str(folder), 5, 1, "video", template="img_{:05d}.png")
    frames = item.read(lambda n: [0, n - 1, 0])
    assert frames.shape == (3, 8, 10, 3)
    assert frames[:, 0, 0, 0].tolist() == [40, 200, 40]


def test_image_folder_labels_classes_in_sorted_order(tmp_path):
    for name, value in (("cat", 10), ("ant", 20)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(tmp_path / name / "1.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    items = sources.read_class_folder(str(tmp_path), "image")
    assert [(os.path.basename(os.path.dirname(i.data)), i.label) for i in items] == [
        ("ant", 0),
        ("cat", 1),
    ]
    clip = items[1].read([0])
    assert clip.shape == (1, 6, 6, 3) and clip.max() == 10


def test_tfds_round_trip_gives_the_same_frames(motion_dataset, tmp_path):
    train = os.path.join(motion_dataset, "train.txt")
    val = os.path.join(motion_dataset, "val.txt")
    tfds_builder.build("motion", {"train": train, "validation": val}, motion_dataset, str(tmp_path))
    source = sources.TfdsSource("video_list/motion", "train", str(tmp_path))
    files = {i.path: i for i in sources.read_list_file(train, motion_dataset)}
    assert len(source) == len(files)
    for index in (0, len(source) - 1):
        record = source[index]
        original = files[os.path.join(motion_dataset, record.name)]
        assert record.label == original.label and record.video_id == original.video_id
        np.testing.assert_array_equal(record.read([0, 5, 15]), original.read([0, 5, 15]))


def test_missing_tfds_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="TFDS dataset 'video_list/none'"):
        sources.TfdsSource("video_list/none", "train", str(tmp_path))


def test_video_folder_and_tfds_from_it(motion_dataset, tmp_path):
    folder = os.path.join(motion_dataset, "videos")
    items = sources.read_class_folder(folder, "video")
    assert len(items) == 32 and {i.label for i in items} == {0, 1, 2, 3}
    assert os.path.basename(os.path.dirname(items[0].path)) == "down"  # sorted class names
    assert items[0].video_id == f"down/{os.path.basename(items[0].path)}"
    tfds_builder.build("folder", {"train": folder}, "", str(tmp_path))
    source = sources.TfdsSource("video_list/folder", "train", str(tmp_path))
    assert len(source) == 32
    assert sorted(source[i].video_id for i in range(32)) == sorted(i.video_id for i in items)
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        sources.read_class_folder(str(tmp_path / "nope"), "video")
