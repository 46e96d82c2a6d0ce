"""A workdir's piecewise-written files (metrics.jsonl, TensorBoard events) for a workdir in a
bucket: written to a local directory as for a local workdir, and uploaded whole at a bounded
rate, since an object store has no append and tensorboardX's own GCS writer re-uploads the
whole event file at every flush."""

import os
import shutil
import tempfile
import time

from vmp_jax.storage import paths


class Mirror:
    """`local` holds the files of `target`; `sync()` uploads those changed since the last
    upload, at most once every `every_seconds` unless forced. For a local target, `local` is
    the target itself and `sync` does nothing."""

    def __init__(self, target: str, *, every_seconds: float = 60.0, download: tuple = ()):
        """download: names of files under `target` to fetch first (a resumed run appends to
        them)."""
        self.target, self.every_seconds = target, every_seconds
        self.remote = paths.is_url(target)
        self.local = tempfile.mkdtemp(prefix="vmp-mirror-") if self.remote else target
        self._sent: dict[str, tuple[float, int]] = {}  # relative name -> (mtime, size) uploaded
        self._last = time.monotonic()
        if not self.remote:
            os.makedirs(self.local, exist_ok=True)
            return
        for name in download:
            source = paths.join(target, name)
            if paths.exists(source):
                with open(os.path.join(self.local, name), "wb") as f:
                    f.write(paths.read_bytes(source))
                self._sent[name] = self._stamp(name)

    def _stamp(self, name: str) -> tuple[float, int]:
        info = os.stat(os.path.join(self.local, name))
        return info.st_mtime, info.st_size

    def sync(self, *, force: bool = False) -> int:
        """Uploads the files changed since their last upload; returns how many it sent."""
        if not self.remote or (not force and time.monotonic() - self._last < self.every_seconds):
            return 0
        self._last = time.monotonic()
        sent = 0
        for root, _, files in os.walk(self.local):
            for file in files:
                name = os.path.relpath(os.path.join(root, file), self.local)
                stamp = self._stamp(name)
                if self._sent.get(name) != stamp:
                    paths.upload(os.path.join(self.local, name), paths.join(self.target, name))
                    self._sent[name], sent = stamp, sent + 1
        return sent

    def close(self) -> None:
        """Uploads what is left and removes the local copy."""
        if self.remote:
            self.sync(force=True)
            shutil.rmtree(self.local, ignore_errors=True)
