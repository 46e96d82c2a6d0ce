"""compile_cache.cache_options: a cache directory set after the process's first compile is used."""

import os
import subprocess
import sys
import textwrap


def test_a_cache_directory_set_after_a_compile_is_written(tmp_path):
    # A fresh process: the first compile, with no cache directory, decides "no cache"; the
    # block's directory must still receive the block's programs, and nothing after it.
    script = textwrap.dedent(
        f"""
        import os, jax, jax.numpy as jnp
        from vmp_jax import compile_cache
        jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()
        path = {str(tmp_path / "cache")!r}
        with compile_cache.cache_options(
            jax_compilation_cache_dir=path, jax_persistent_cache_min_compile_time_secs=0.0
        ):
            jax.jit(lambda x: x * 3)(jnp.ones(5)).block_until_ready()
        inside = len(os.listdir(path)) if os.path.isdir(path) else 0
        jax.jit(lambda x: x - 7)(jnp.ones(9)).block_until_ready()
        after = len(os.listdir(path)) if os.path.isdir(path) else 0
        print(inside, after, jax.config.jax_compilation_cache_dir)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    inside, after, restored = out.stdout.split()
    assert int(inside) >= 1  # the block's program was cached
    assert int(after) == int(inside)  # the directory no longer used after the block
    assert restored == "None"
