"""`vmp` as the multi-process tests launch it: every process of a run writes the programs it
compiles to the persistent compilation cache, not process 0 alone.

jax writes cache entries from process 0 only (`jax._src.compiler._cache_write`, against write
contention on shared filesystems such as GCS), and process 1's cache keys differ from process
0's (its CPU topology's fingerprint, `JAX_DEBUG_LOG_MODULES=jax._src.cache_key`). So process 1
compiled every program anew in every 2-process run the tests launch while process 0, which
had found them all in the cache, waited for it in the first collective: about 10 s of each run
on the 2-core machine. Here the cache is a local folder (the module's) and each process
writes under its own keys; what the processes compute is the same (a cache hit loads the
executable that the same compile produced). Nothing a test checks depends on it.

`python tests/multihost/every_process_caches.py ARGS` runs `vmp ARGS` so; `install()` does it
in a process that then runs vmp itself.
"""

import inspect
import sys
import warnings

# jax's `_cache_write`, whose process-0 rule this lifts: the parameters it is called with.
_CACHE_WRITE = ["cache_key", "compile_time_secs", "module_name", "backend", "executable"]
_CACHE_WRITE += ["host_callbacks"]


def install() -> None:
    """From now on in this process, a program compiled on a cache miss is written to the
    persistent cache whatever the process index, on jax's other conditions (no host callbacks,
    compiled for at least jax_persistent_cache_min_compile_time_secs). With a jax whose
    `_cache_write` takes other arguments, a warning and jax's own rule."""
    from jax._src import compilation_cache, compiler, config, distributed

    write = compiler._cache_write
    if list(inspect.signature(write).parameters) != _CACHE_WRITE:
        warnings.warn(
            f"every_process_caches: jax's _cache_write takes {inspect.signature(write)}, "
            f"not {_CACHE_WRITE}: process 0 alone writes the compilation cache",
            stacklevel=2,
        )
        return

    def every_process_writes(
        cache_key, compile_time_secs, module_name, backend, executable, host_callbacks
    ):
        if distributed.global_state.process_id == 0:
            return write(
                cache_key, compile_time_secs, module_name, backend, executable, host_callbacks
            )
        min_seconds = config.persistent_cache_min_compile_time_secs.value
        if host_callbacks or compile_time_secs < min_seconds:
            return None
        try:
            compilation_cache.put_executable_and_time(
                cache_key, module_name, executable, backend, int(compile_time_secs)
            )
        except Exception as e:  # as jax's own: a failed write costs a compile, nothing else
            warnings.warn(f"writing the cache entry of {module_name!r}: {e!r}", stacklevel=2)
        return None

    compiler._cache_write = every_process_writes


if __name__ == "__main__":
    install()
    from vmp_jax.cli import main

    sys.exit(main(sys.argv[1:]))
