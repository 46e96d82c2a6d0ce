"""tests/shm_watch.py, the check that a run leaves nothing in /dev/shm: it lists what the
processes started under it (a spawned child's included, as Grain's workers are) left there,
including what Python's resource tracker no longer knows of and so never warns about, and
nothing of any other process."""

import os
import subprocess
import sys
from multiprocessing import shared_memory

from tests.shm_watch import SHM_DIR, SharedMemoryWatch

# Creates a shared memory object, takes it off the resource tracker (as a consumer taking
# ownership does) and exits without unlinking it: left in /dev/shm, and no warning.
LEAK = """
from multiprocessing import resource_tracker, shared_memory
memory = shared_memory.SharedMemory(create=True, size=16)
resource_tracker.unregister(memory._name, "shared_memory")
print(memory.name)
"""

# The same, in a spawned child (Grain's workers are spawned) of a process that leaves nothing.
SPAWNED = f"""
import multiprocessing
def leak():
    exec({LEAK!r})
if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=leak)
    child.start(); child.join()
    assert child.exitcode == 0, child.exitcode
    print(child.pid)
"""


def _run(code: str, script) -> subprocess.CompletedProcess:
    """`code` run as the file `script` (a spawned child imports its main module from it)."""
    script.write_text(code)
    run = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run


def test_what_a_watched_run_leaves_is_listed_and_nothing_else(tmp_path):
    outside = shared_memory.SharedMemory(create=True, size=16)  # another run's, untagged
    watch = SharedMemoryWatch(tmp_path)
    try:
        with watch:
            run = _run(LEAK, tmp_path / "leak.py")
            spawned = _run(SPAWNED, tmp_path / "spawned.py")
        assert "leaked" not in run.stderr + spawned.stderr  # the warning says nothing of them
        left = watch.left()
        assert len(left) == 2 and all(n.startswith(f"psm_{watch.tag}_") for n in left), left
        assert run.stdout.strip() in left
        assert spawned.stdout.split()[-1] in watch.pids()  # the child noted itself: its slots
        assert outside.name not in left  # would count as the run's
    finally:
        outside.close()
        outside.unlink()
        for name in watch.left():
            os.unlink(os.path.join(SHM_DIR, name))
