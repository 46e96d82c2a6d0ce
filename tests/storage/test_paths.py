"""Local writes (`storage.write_bytes`): whole or not at all, each through its own temporary,
flushed to disk before the rename, so two processes writing one file (two hosts' metrics, a
resumed packer beside a stale one) never write into one temporary or leave half a file."""

import os

import pytest

from vmp_jax import storage


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path, monkeypatch):
    """A second writer runs to completion between the first one's write and its rename (as
    another process may): each renames its own temporary, the last rename wins whole, and
    no temporary is left. With one fixed `<name>.tmp` the second writer's rename took the
    first one's temporary away (FileNotFoundError) after overwriting it."""
    target = str(tmp_path / "state.json")
    first, second = b"a" * 100_000, b"b" * 10
    renamed = []
    real_replace = os.replace

    def replace_after_another_writer(source, destination):
        renamed.append(os.fspath(source))
        if len(renamed) == 1:  # the first writer's rename: the other writer goes first
            storage.write_bytes(target, second)
            assert storage.read_bytes(target) == second
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_after_another_writer)
    storage.write_bytes(target, first)
    assert len(set(renamed)) == 2, renamed  # two temporaries, one per writer
    assert storage.read_bytes(target) == first  # the last rename's file, whole
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_write_is_on_disk_before_it_replaces_the_file(tmp_path, monkeypatch):
    """fsync of the new file's data before the rename, of the directory after it; a failed
    write leaves the old file and no temporary; the new file has open()'s permissions."""
    target = str(tmp_path / "sub" / "metrics.jsonl")
    storage.write_bytes(target, b"old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}") if _has_proc() else None))
        real_fsync(fd)

    def replace(source, destination):
        events.append(("replace", None))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    storage.write_bytes(target, b"new")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    if _has_proc():
        assert [e[1] for e in events] == [False, None, True]  # the file's data, then the folder
    assert storage.read_bytes(target) == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask

    def refused(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", refused)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes(target, b"newer")
    assert storage.read_bytes(target) == b"new"
    assert os.listdir(tmp_path / "sub") == ["metrics.jsonl"]


def _has_proc() -> bool:
    return os.path.isdir("/proc/self/fd")
