"""`vmp make-frames --reencode gop8|intra`: short-GOP H.264 copies of a list's videos with a list
file per split; keyframes where asked, the frames close to the source's, the trade-off printed,
resumable, broken videos listed and left out, and no source ever overwritten."""

import os
import re

import av
import numpy as np
import pytest

from tests.data.conftest import broken_files
from vmp_jax import cli
from vmp_jax.data import listing, reencode


def _keyframes(path: str) -> list[int]:
    """The indices of the video's keyframes, in presentation order."""
    with av.open(path) as container:
        return [i for i, frame in enumerate(container.decode(video=0)) if frame.key_frame]


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _reencode(motion_dataset, out, gop, capsys, *extra):
    argv = ["make-frames", "--list", os.path.join(motion_dataset, "train.txt"), "--data-root"]
    argv += [motion_dataset, "--out", str(out), "--reencode", gop, "--workers", "1", *extra]
    code = cli.main(argv)
    printed = capsys.readouterr()
    return code, printed.out + printed.err


@pytest.mark.parametrize("gop,keyframes", [("gop8", [0, 8]), ("intra", list(range(16)))])
def test_reencoded_videos_have_the_keyframes_asked_and_the_source_frames(
    motion_dataset, tmp_path, capsys, gop, keyframes
):
    out = tmp_path / gop
    code, printed = _reencode(motion_dataset, out, gop, capsys, "--crf", "18")
    assert code == 0
    sources = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    copies = listing.read_list_file(str(out / "list.txt"), str(out))
    assert [c.video_id for c in copies] == [reencode.relative_path(s) for s in sources]
    assert [c.label for c in copies] == [s.label for s in sources]
    for source, copy in list(zip(sources, copies, strict=True))[::6]:
        assert _keyframes(copy.path) == keyframes
        a, b = source.read(np.arange(16)), copy.read(np.arange(16))  # (16, 48, 48, 3)
        other = sources[(sources.index(source) + 1) % len(sources)].read(np.arange(16))
        assert np.abs(a.astype(float) - b).mean() < 4  # CRF 18 of CRF 23 frames
        assert np.abs(a.astype(float) - other).mean() > 12
    assert f"re-encoded {len(sources)} videos, kept 0 already there ({gop}" in printed
    assert "decoding an 8-frame training clip (exact, one core, 4 videos)" in printed
    assert f"--config.data.data_root={out} --config.data.train_list={out}/list.txt" in printed


def test_an_interrupted_reencode_keeps_what_it_finished(motion_dataset, tmp_path, capsys):
    out = tmp_path / "gop8"
    assert _reencode(motion_dataset, out, "gop8", capsys)[0] == 0
    finished = sorted(out.rglob("*.mp4"))
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    finished[3].unlink()  # as if the run had stopped before it
    part = finished[5].with_name(finished[5].name + ".part.mp4")
    part.write_bytes(b"half a file")  # a temporary file of an interrupted write: not kept
    code, printed = _reencode(motion_dataset, out, "gop8", capsys)
    assert code == 0
    assert "re-encoded 1 videos, kept 23 already there" in printed
    assert all(p.stat().st_mtime_ns == stamps[p] for p in finished if p != finished[3])
    assert finished[3].is_file()
    code, printed = _reencode(motion_dataset, out, "intra", capsys)
    assert code == 2 and "other settings (gop: gop8 -> intra)" in printed  # no mixed encodings


def test_reencode_lists_broken_videos_and_never_overwrites_a_source(
    motion_dataset, tmp_path, capsys
):
    bad = broken_files(str(tmp_path))
    good = os.path.join(motion_dataset, "videos", "right", "right_0005.mp4")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("".join(f"{p} 0\n" for p in [good, *bad.values(), good]))
    out = tmp_path / "out"
    argv = ["make-frames", "--list", str(mixed), "--out", str(out), "--reencode", "intra"]
    assert cli.main([*argv, "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert "unreadable: 4 videos, left out" in printed
    for reason, path in bad.items():
        assert printed.count(f"{path}: {reason}") == 1
    assert "re-encoded 1 videos, kept 0 already there" in printed  # the same file listed twice
    copies = listing.read_list_file(str(out / "list.txt"), str(out))
    assert len(copies) == 2 and copies[0].path.startswith(str(out))  # absolute ids, made relative

    listed = tmp_path / "in_place.txt"
    listed.write_text("videos/right/right_0005.mp4 0\n")
    argv = ["make-frames", "--list", str(listed), "--data-root", motion_dataset, "--out"]
    assert cli.main([*argv, motion_dataset, "--reencode", "gop8"]) == 2
    assert "would overwrite the source video" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(motion_dataset, reencode.SETTINGS_FILE))  # no work
    assert cli.main([*argv, str(out), "--reencode", "gop8", "--crf", "60"]) == 2
    assert "--crf must be in 0..51, got 60" in capsys.readouterr().err
    assert reencode.relative_path(listing.VideoFile("x", 0, "../up/a.avi")) == "_/up/a.mp4"


def test_sources_that_map_to_one_name_get_their_own_copies(motion_dataset, tmp_path, capsys):
    """`a.avi` and `a.mp4`, `../x.mp4` and `_/x.mp4`: one relative path each pair, one in the
    train list and one in the val list, re-encoded into one folder."""
    sources = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    one_per_class = list({s.label: s for s in sources}.values())  # 4 videos that differ
    root = tmp_path / "root"
    names = ["a.mp4", "_/x.mp4", "a.avi", "../x.mp4"]
    for name, source in zip(names, one_per_class, strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_bytes(source.path))  # MP4 data, as .avi too
    lists = {}
    for split, pair in (("train", slice(0, 2)), ("val", slice(2, 4))):
        lists[split] = tmp_path / f"{split}.txt"
        rows = zip(names[pair], one_per_class[pair], strict=True)
        lists[split].write_text("".join(f"{n} {s.label}\n" for n, s in rows))
    out = tmp_path / "out"
    argv = ["make-frames", "--config", "configs/demo.py", "--config.data.source=list"]
    argv += [f"--config.data.data_root={root}", f"--config.data.train_list={lists['train']}"]
    argv += [f"--config.data.val_list={lists['val']}", "--out", str(out), "--reencode", "intra"]
    assert cli.main([*argv, "--crf", "18", "--workers", "1"]) == 0
    assert capsys.readouterr().out.count("re-encoded 2 videos, kept 0 already there") == 2
    copies = [
        c for s in ("train", "val") for c in listing.read_list_file(str(out / f"{s}.txt"), str(out))
    ]
    assert len({c.path for c in copies}) == 4
    assert [c.video_id for c in copies][:2] == ["a.mp4", "_/x.mp4"]  # the first keeps its name
    for source, copy in zip(one_per_class, copies, strict=True):
        assert copy.label == source.label
        a, b = source.read(np.arange(16)), copy.read(np.arange(16))  # (16, 48, 48, 3)
        assert np.abs(a.astype(float) - b).mean() < 4  # its own source's frames


def test_copies_are_assigned_across_splits_and_a_clash_names_both_sources():
    train = [listing.VideoFile("/d/a.mp4", 0, "a.mp4"), listing.VideoFile("/d/a.mp4", 0, "a.mp4")]
    val = [listing.VideoFile("/d/a.avi", 1, "a.avi"), listing.VideoFile("/d/a.mp4", 0, "a.mp4")]
    (t, v) = reencode.assign_targets([train, val])
    assert t == ["a.mp4", "a.mp4"] and v[1] == "a.mp4"  # one file listed thrice: one copy
    assert v[0].startswith("a.") and v[0].endswith(".mp4") and v[0] != "a.mp4"
    up = [listing.VideoFile("/d/_/x.mp4", 0, "_/x.mp4"), listing.VideoFile("/x.mp4", 1, "../x.mp4")]
    (in_one_list,) = reencode.assign_targets([up])
    assert in_one_list[0] == "_/x.mp4" and in_one_list[1].startswith("_/x.")
    assert in_one_list[1].endswith(".mp4") and in_one_list[1] != "_/x.mp4"
    same_id = [listing.VideoFile(f"/{root}/a.mp4", 0, "a.mp4") for root in "pqr"]
    with pytest.raises(ValueError, match="/r/a.mp4 and /q/a.mp4 would be re-encoded to one"):
        reencode.assign_targets([same_id])


def test_a_reordered_rerun_keeps_each_sources_copy(motion_dataset, tmp_path, capsys):
    """Run 1 lists [a.mp4, a.avi] (a.avi gets a suffixed name), run 2 the other way round: each
    source keeps its copy, never the other video's; a reencode.json without the record stops
    the run where the name is ambiguous, and a target given for another source's copy too."""
    sources = listing.read_list_file(os.path.join(motion_dataset, "train.txt"), motion_dataset)
    two = list({s.label: s for s in sources}.values())[:2]  # 2 videos that differ
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    for name, source in zip(["a.mp4", "a.avi"], two, strict=True):
        (root / name).write_bytes(_bytes(source.path))  # MP4 data, as .avi too
    argv = ["make-frames", "--list", str(tmp_path / "list.txt"), "--data-root", str(root)]
    argv += ["--out", str(out), "--reencode", "intra", "--crf", "18", "--workers", "1"]
    for order in ([0, 1], [1, 0]):
        rows = [f"{['a.mp4', 'a.avi'][i]} {two[i].label}\n" for i in order]
        (tmp_path / "list.txt").write_text("".join(rows))
        assert cli.main(argv) == 0
        copies = listing.read_list_file(str(out / "list.txt"), str(out))
        for i, copy in zip(order, copies, strict=True):
            a, b = two[i].read(np.arange(16)), copy.read(np.arange(16))  # (16, 48, 48, 3)
            assert np.abs(a.astype(float) - b).mean() < 4  # its own source's frames
    assert "kept 2 already there" in capsys.readouterr().out
    assert [c.video_id for c in copies][1] == "a.mp4"  # a.mp4 kept its name

    items = [listing.VideoFile(str(root / n), 0, n) for n in ("a.avi", "a.mp4")]
    settings = reencode.Settings("intra", crf=18)
    with pytest.raises(
        ValueError, match=r"a\.avi would be re-encoded to \S*a\.mp4, which an earlier"
    ):
        reencode.reencode(items, str(out), "x.txt", settings, targets=["a.mp4", "b.mp4"])
    with pytest.raises(ValueError, match=r"a\.avi would be re-encoded to b\.mp4, but an earlier"):
        reencode.reencode(items[:1], str(out), "x.txt", settings, targets=["b.mp4"])
    record = out / reencode.SETTINGS_FILE
    record.write_text('{"gop": "intra", "short_side": 320, "crf": 18}')  # before the record
    assert cli.main(argv) == 2
    assert re.search(r"a\.mp4 and \S*a\.avi both re-encode to a\.mp4", capsys.readouterr().err)
