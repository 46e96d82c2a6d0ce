"""jax's persistent compilation cache, set for a block of work and restored after it.

jax starts its cache once, from the options of the moment, and keeps that cache until
`compilation_cache.reset_cache()`: without a reset, programs compiled after the block would
still go to the block's directory (tests/test_compile_cache.py), and a cache disabled for a
block would still serve it. So the options are changed and the cache reset together, on the
way in and on the way out.
"""

import contextlib

import jax
from jax.experimental.compilation_cache import compilation_cache


@contextlib.contextmanager
def cache_options(**options):
    """jax config `options` (e.g. jax_compilation_cache_dir=PATH) inside the block, the cache's
    use decided anew with them, and both restored after it."""
    before = {name: getattr(jax.config, name) for name in options}
    _update(options)
    try:
        yield
    finally:
        _update(before)


def _update(options: dict) -> None:
    for name, value in options.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
