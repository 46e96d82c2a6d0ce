"""Names a watched run's shared memory after the watch (tests/shm_watch.py), in every Python
process the run starts (sitecustomize.py calls `install` at start-up; stdlib only).

In a process whose environment has VMP_TEST_SHM_WATCH=<folder>, with <tag> the folder's name:
Python's shared memory objects (Grain's buffers) are named psm_<tag>_<8 hex> instead of
psm_<8 hex>, multiprocessing's semaphores mp-<tag>-<8 chars> instead of mp-<8 chars>, and the
process notes its pid in <folder>/pids (the pid names the batch slots a Grain worker makes,
vmp-batch-<pid>-..., `vmp_jax.data.batch_memory`). Nothing else changes."""

import os

ENV = "VMP_TEST_SHM_WATCH"


def tag(name: str) -> tuple[str, int, str]:
    """Names this process's shared memory and semaphores after `name` from now on; returns
    what was there (for `untag`)."""
    from multiprocessing import process, shared_memory

    config = process.current_process()._config
    before = (shared_memory._SHM_NAME_PREFIX, shared_memory._SHM_SAFE_NAME_LENGTH)
    before += (config.get("semprefix", "/mp"),)
    prefix = f"/psm_{name}_"
    shared_memory._SHM_NAME_PREFIX = prefix
    shared_memory._SHM_SAFE_NAME_LENGTH = len(prefix) + 8  # 4 random bytes, as untagged
    config["semprefix"] = f"/mp-{name}"
    return before


def untag(before: tuple[str, int, str]) -> None:
    from multiprocessing import process, shared_memory

    shared_memory._SHM_NAME_PREFIX, shared_memory._SHM_SAFE_NAME_LENGTH, semprefix = before
    process.current_process()._config["semprefix"] = semprefix


def install() -> None:
    """Tags this process and notes its pid when it runs under a watch."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    tag(os.path.basename(folder))
    try:
        with open(os.path.join(folder, "pids"), "a") as f:  # one short append: atomic
            f.write(f"{os.getpid()}\n")
    except OSError:
        pass  # the watch is over (its folder gone): nothing to note
