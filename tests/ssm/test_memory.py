"""The chunked VJP keeps one state per chunk: XLA's compiled memory analysis shows it."""

from functools import partial

import jax
import jax.numpy as jnp

from vmp_jax.ssm import selective_scan

VMP_OPTIONS = {"reverse": True, "mask_diagonal": True, "residual": True}


def _grad_temp_bytes(algorithm: str, b: int, l: int, d: int, n: int) -> int:
    """Temp bytes of the compiled forward+backward program w.r.t. all seven inputs, as a VMP
    layer uses them (compiled only, never run)."""
    f32 = partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    shapes = (f32((b, l, d)), f32((b, l, d)), f32((d, n)), f32((b, l, n)), f32((b, l, n)))
    shapes = (*shapes, f32((d,)), f32((b, l, d)))  # D, z

    def loss(*args):
        return jnp.sum(selective_scan(*args, algorithm=algorithm, **VMP_OPTIONS))

    compiled = jax.jit(jax.grad(loss, argnums=tuple(range(7)))).lower(*shapes).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_gradient_memory_is_a_tenth_of_sequential_at_16_frame_size():
    """(2, 3137, 384, 16): d_inner of VMP-Tiny at 16 frames, the size the issue names."""
    shape = (2, 3137, 384, 16)
    sequential = _grad_temp_bytes("sequential", *shape)
    chunked = _grad_temp_bytes("chunked", *shape)
    state_sequence = 2 * 3137 * 384 * 16 * 4  # one (b, l, d, n) float32 array
    assert sequential > state_sequence, "the baseline keeps at least one state sequence"
    assert chunked <= sequential / 10, (
        f"chunked {chunked / 2**20:.1f} MiB vs {sequential / 2**20:.1f}"
    )
    assert chunked < state_sequence / 2, "chunked must not hold an (l, d, n) array"


def test_chunked_gradient_memory_grows_slower_than_the_sequence():
    """Doubling L doubles sequential's temp memory; chunked's grows by the saved states only."""
    short_seq, long_seq = (_grad_temp_bytes("sequential", 2, l, 64, 16) for l in (1024, 2048))
    short_chk, long_chk = (_grad_temp_bytes("chunked", 2, l, 64, 16) for l in (1024, 2048))
    assert long_seq - short_seq > 10 * (long_chk - short_chk)
