"""One path type for every file the `vmp` commands read or write: a local path, or a URL
(`gs://bucket/...`, and every protocol fsspec knows).

Local paths go through `os` and `open()` exactly as before; URLs go through fsspec (gcsfs for
gs://, no TensorFlow), the library etils' epath and Orbax's path handling sit on. Without its
listing cache: other processes and hosts write the same bucket (checkpoints, a store being
packed), and a cached listing would not show what they wrote. Functions take and return
strings, so that a path stays printable and picklable across the loader's worker processes.
Object stores have no append, so nothing here appends to a URL: files written piecewise are
kept in a local mirror and uploaded whole (`storage.mirror`).
"""

import builtins
import contextlib
import functools
import io
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator

from vmp_jax.storage import errors


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object in a remote store (`scheme://...`) rather than a file."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> str:
    """An absolute local path (as os.path.abspath), or the URL unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if is_url(path) else os.path.dirname(path)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


# fsspec's object stores whose listings are cached per filesystem instance.
CACHED_LISTING_PROTOCOLS = ("gs", "gcs", "s3", "s3a", "az", "abfs", "abfss")


def disable_listing_caches() -> None:
    """Turns off fsspec's listing cache for every object store, for every filesystem made from
    now on: ours, and the ones etils' epath makes for Orbax. With a cache, a step directory
    another process wrote, or one moved aside, stays invisible (or visible) to Orbax's listing
    of its steps: a resumed run skipped the saves it believed it had."""
    import fsspec.config

    for protocol in CACHED_LISTING_PROTOCOLS:
        fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False


@functools.cache
def _filesystem(protocol: str):
    import fsspec

    disable_listing_caches()
    return fsspec.filesystem(protocol, use_listings_cache=False)


def filesystem(url: str):
    """(fsspec filesystem, path within it) of a URL."""
    protocol = url.split("://", 1)[0]
    return _filesystem("gcs" if protocol == "gs" else protocol), url


def exists(path: str | os.PathLike) -> bool:
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return fs.exists(at)
    return os.path.exists(path)


def isfile(path: str | os.PathLike) -> bool:
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return fs.isfile(at)
    return os.path.isfile(path)


def isdir(path: str | os.PathLike) -> bool:
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return fs.isdir(at)
    return os.path.isdir(path)


def listdir(path: str | os.PathLike) -> list[str]:
    """The names in a directory (a URL prefix), unsorted as os.listdir."""
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(at, detail=False)]
    return os.listdir(path)


def makedirs(path: str | os.PathLike) -> None:
    """mkdir -p; nothing to do on an object store, where directories are name prefixes."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def getsize(path: str | os.PathLike) -> int:
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return fs.size(at)
    return os.path.getsize(path)


def rename(source: str, target: str) -> None:
    """Moves a file or directory (on an object store: copies, then deletes, with the calls
    every store has; gcsfs' mv tries GCS's moveTo first, which not every bucket offers)."""
    if is_url(source):
        fs, at = filesystem(source)
        fs.copy(at, target, recursive=True)
        fs.rm(at, recursive=True)
    else:
        os.rename(source, target)


def open(path: str | os.PathLike, mode: str = "r", **kwargs):  # noqa: A001 - the builtin's twin
    """builtins.open for a local path; for a URL, fsspec's file object (no append mode: an
    object is written whole when the file is closed)."""
    if not is_url(path):
        return builtins.open(path, mode, **kwargs)
    if "a" in mode:
        raise ValueError(f"{path}: object stores cannot append; write the whole file")
    fs, at = filesystem(os.fspath(path))
    return fs.open(at, mode, **kwargs)


def open_ranges(url: str, *, block_size: int, size: int | None = None):
    """A seekable binary file object on an object in a bucket that fetches what is read in
    range requests of `block_size` bytes, each block once (fsspec's block cache: a video's
    index at its end and its frames at the start do not evict each other): a reader that
    seeks fetches the blocks it reads, not the object. `size` (known already) saves a
    request."""
    fs, at = filesystem(url)
    return fs.open(at, "rb", block_size=block_size, cache_type="blockcache", size=size)


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def read_bytes(path: str | os.PathLike) -> bytes:
    if is_url(path):
        fs, at = filesystem(os.fspath(path))
        return fs.cat_file(at)
    with builtins.open(path, "rb") as f:
        return f.read()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes a whole text file (UTF-8); on a URL one upload."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes a whole file, whole or not at all, so a crash leaves no half file: on a URL one
    upload (an object appears complete or not at all); locally a temporary file beside it,
    renamed over it (its directory made first). The temporary's name is unique to this
    write, so two processes writing the same file never write into one temporary (the last
    rename wins, whole); it is flushed to disk before the rename, and the rename itself after
    it (the directory synced), so a power cut leaves the old file or the new, never an empty
    one."""
    path = os.fspath(path)
    if is_url(path):  # gcsfs retries each request 6 times; a fault outlasting that, ours
        fs, at = filesystem(path)
        errors.retrying(lambda: fs.pipe_file(at, data), f"writing {path}")
        return
    _make_parent(path)
    handle, temporary = _new_temporary(path)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _sync_directory(os.path.dirname(path) or ".")


def _new_temporary(path: str) -> tuple[int, str]:
    """(descriptor, name) of a new file beside `path` whose name no other writer has: created
    exclusively (O_EXCL), with open()'s permissions (0o666 less the umask; mkstemp's are
    0o600, which the renamed file would keep)."""
    directory, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name beside it after 100 tries")


def _sync_directory(directory: str) -> None:
    """Flushes a directory's entries (a rename in it) to disk, where the system allows it
    (not on Windows, nor on every file system)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _make_parent(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def upload(local: str, target: str) -> None:
    """Copies a local file, or a directory tree, to `target` (a URL or another local path)."""
    if os.path.isdir(local):
        for root, _, files in os.walk(local):
            for name in files:
                source = os.path.join(root, name)
                relative = os.path.relpath(source, local).replace(os.sep, "/")
                upload(source, join(target, relative))
        return
    with builtins.open(local, "rb") as f:
        write_bytes(target, f.read())


@contextlib.contextmanager
def staged(target: str) -> Iterator[str]:
    """A local directory to build `target` in: `target` itself when it is local; for a URL a
    temporary directory, uploaded to it when the block ends without error (for writers such
    as ArrayRecord's and TFDS', which write local files only)."""
    if not is_url(target):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="vmp-staged-") as local:
        yield local
        upload(local, target)


@contextlib.contextmanager
def staged_file(target: str) -> Iterator[str]:
    """A local file name to write `target` through (itself when local, its directory made; for
    a URL a temporary file with the same name, uploaded when the block ends without error), for
    writers that take file names only (safetensors, torch.save, ArrayRecord)."""
    if not is_url(target):
        _make_parent(target)
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="vmp-staged-") as local:
        path = os.path.join(local, basename(target))
        yield path
        upload(path, target)


@contextlib.contextmanager
def local_file(path: str, suffix: str = "") -> Iterator[str]:
    """A local file name holding `path`'s bytes (a download for a URL), for libraries that
    take file names only."""
    if not is_url(path):
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="vmp-", suffix=suffix) as f:
        f.write(read_bytes(path))
        f.flush()
        yield f.name


def save_png(figure, path: str, *, dpi: int) -> None:
    """A matplotlib figure as a PNG at `path` (local or in a bucket), written whole."""
    body = io.BytesIO()
    figure.savefig(body, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, body.getvalue())
