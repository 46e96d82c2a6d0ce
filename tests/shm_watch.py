"""What a run leaves in /dev/shm: `SharedMemoryWatch` lists the entries that the processes
started inside it made and did not remove, told apart by name from every other process's
(an xdist worker's, a concurrent run's, an earlier session's leftovers), so that a test can
assert that none remain.

Python's resource tracker warns of "leaked shared_memory" objects only while they are still
registered with it, and then removes them itself; an object taken off the tracker (as a
consumer that takes ownership does) and never unlinked stays in /dev/shm silently, as does
everything when the tracker itself is killed. Listing /dev/shm sees both.

Under a watch, every Python process started with its environment (tests/netguard/shm_tag.py,
run at start-up through the suite's sitecustomize) names its entries after the watch's tag:
Grain's shared memory psm_<tag>_..., multiprocessing's semaphores sem.mp-<tag>-..., and notes
its pid, which names a Grain worker's batch slots (vmp-batch-<pid>-...). This process is
tagged too while the watch is open (a run started in-process: `cli.main`).

Use:
    with SharedMemoryWatch(tmp_path / "shm") as watch:
        subprocess.run([...])  # or cli.main([...]): the environment is the watch's
    assert watch.left() == []
"""

import gc
import os
import secrets
import time

import shm_tag

SHM_DIR = "/dev/shm"


class SharedMemoryWatch:
    """Tags the processes started while it is open; `left()` lists their entries in /dev/shm."""

    def __init__(self, folder):
        self.tag = secrets.token_hex(4)
        self.folder = os.path.join(os.fspath(folder), self.tag)
        os.makedirs(self.folder)

    def __enter__(self) -> "SharedMemoryWatch":
        self._environ = os.environ.get(shm_tag.ENV)
        os.environ[shm_tag.ENV] = self.folder  # inherited by every process started from here
        self._untagged = shm_tag.tag(self.tag)
        return self

    def __exit__(self, *_) -> None:
        shm_tag.untag(self._untagged)
        if self._environ is None:
            del os.environ[shm_tag.ENV]
        else:
            os.environ[shm_tag.ENV] = self._environ

    def pids(self) -> set[str]:
        """The processes started under the watch so far (each noted itself at start-up)."""
        try:
            with open(os.path.join(self.folder, "pids")) as f:
                return set(f.read().split())
        except FileNotFoundError:
            return set()

    def still_running(self) -> set[str]:
        """The watched processes that have not exited yet: this one aside, and Python's
        resource tracker (one per process that starts children, alive as long as that
        process: the last to clean up, not part of a run)."""
        return {
            pid
            for pid in self.pids()
            if pid != str(os.getpid()) and running(int(pid)) and not _tracker(int(pid))
        }

    def left(self, wait_s: float = 60) -> list[str]:
        """The entries of /dev/shm that the watched processes made and that are still there
        once every one of them has exited (waited for up to `wait_s`: a worker being closed
        unlinks its last buffers as it exits) and this process's garbage is collected (a run
        started here: Grain's iterators sit in reference cycles, and their buffers and
        semaphores go with them): shared memory, semaphores and batch slots."""
        deadline = time.monotonic() + wait_s
        while self.still_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        gc.collect()  # a run in this process: what its objects (in cycles) hold is freed now
        pids = self.pids() | {str(os.getpid())}
        prefixes = (f"psm_{self.tag}_", f"sem.mp-{self.tag}-")
        return sorted(
            name
            for name in os.listdir(SHM_DIR)
            if name.startswith(prefixes)
            or (name.startswith("vmp-batch-") and name.split("-")[2] in pids)
        )


def _tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing.resource_tracker" in f.read()
    except FileNotFoundError:
        return False


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited, its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False
