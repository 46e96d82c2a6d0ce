"""`vmp data-check --scan`: every distinct bad file of a list found once, with its reason, and
a cleaned list with only readable entries."""

import os

from tests.data.conftest import broken_files
from tests.train.test_train_cli import DEMO
from vmp_jax import cli
from vmp_jax.data import listing, scan


def _mixed_list(motion_dataset: str, folder) -> tuple[str, dict[str, str], list[str]]:
    """A list of 2 good videos (one listed twice) and the 4 broken files (each listed twice),
    with a comment; returns (list file, {reason: bad path}, good paths)."""
    bad = broken_files(str(folder))
    good = [
        os.path.join(motion_dataset, "videos", "left", "left_0003.mp4"),
        os.path.join(motion_dataset, "videos", "up", "up_0001.mp4"),
    ]
    lines = ["# mixed", f"{good[0]} 1", *(f"{p} 0" for p in bad.values()), f"{good[1]} 3"]
    lines += [f"{p} 0" for p in bad.values()] + [f"{good[0]} 1"]
    path = folder / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path), bad, good


def test_scan_finds_each_broken_file_once(motion_dataset, tmp_path):
    path, bad, _ = _mixed_list(motion_dataset, tmp_path)
    items = listing.read_list_file(path)
    calls = []
    result = scan.scan(items, workers=3, progress=lambda: calls.append(1))
    assert (result.entries, result.files, len(calls)) == (11, 6, 6)
    assert {name: error.split(": ")[1].split(" (")[0] for name, error in result.bad.items()} == {
        p: r for r, p in bad.items()
    }
    assert result.reasons == {reason: 1 for reason in bad}


def test_cli_scan_reports_and_writes_the_clean_list(motion_dataset, tmp_path, capsys):
    path, bad, good = _mixed_list(motion_dataset, tmp_path)
    clean = tmp_path / "clean.txt"
    assert cli.main(["data-check", "--scan", "--list", path, "--write-clean", str(clean)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "unreadable: 4 of 6 videos (11 list entries)" in lines
    for reason, bad_path in bad.items():
        assert f"  1 x {reason}" in lines
        assert sum(line.startswith(f"  {bad_path}: {reason}") for line in lines) == 1
    assert f"wrote {clean} (8 entries left out)" in lines
    kept = listing.read_list_file(str(clean))
    assert [i.path for i in kept] == [good[0], good[1], good[0]]
    assert clean.read_text().startswith("# mixed\n")
    assert cli.main(["data-check", "--scan", "--list", str(clean)]) == 0
    assert "unreadable: 0 of 2 videos (3 list entries)" in capsys.readouterr().out


def test_cli_scan_of_a_config_scans_both_lists(motion_dataset, tmp_path, capsys):
    path, _, _ = _mixed_list(motion_dataset, tmp_path)
    overrides = [
        f"--config.data.train_list={path}",
        f"--config.data.val_list={os.path.join(motion_dataset, 'val.txt')}",
        f"--config.data.data_root={motion_dataset}",
    ]
    argv = ["data-check", "--scan", "--config", DEMO, *overrides]
    assert cli.main([*argv, "--write-clean", str(tmp_path / "clean.txt")]) == 2
    assert "put {split} in the file name" in capsys.readouterr().err
    out = str(tmp_path / "clean_{split}.txt")
    assert cli.main([*argv, "--write-clean", out]) == 1
    printed = capsys.readouterr().out
    assert "unreadable: 4 of 6 videos" in printed and "unreadable: 0 of 8 videos" in printed
    assert len(listing.read_list_file(out.format(split="train"))) == 3
    val = listing.read_list_file(out.format(split="val"), motion_dataset)
    assert len(val) == 8 and val[0].video_id.startswith("videos/")  # lines kept as written
    # a val list that does not exist is skipped when both are scanned, an error when asked for
    argv[-2] = f"--config.data.val_list={tmp_path / 'none.txt'}"
    assert cli.main(argv) == 1
    assert f"val: {tmp_path / 'none.txt'} not found, not scanned" in capsys.readouterr().out
    assert cli.main([*argv, "--split", "val"]) == 2
    assert "list file not found" in capsys.readouterr().err
