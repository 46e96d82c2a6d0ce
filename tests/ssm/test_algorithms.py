"""Every algorithm equals `reference` in value and in gradient, for every option combination."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ssm.cases import (
    GRAD_TOLERANCE,
    OPTION_COMBOS,
    OPTION_IDS,
    TOLERANCE,
    SharedSweeps,
    assert_close,
    assert_matches,
    random_inputs,
    runs_here,
    scan_args,
    sweep_against_reference,
    value_and_grads,
)
from vmp_jax.ssm import ALGORITHMS, ScanBlocks, chunked, selective_scan

FAST_ALGORITHMS = [name for name in ALGORITHMS if name != "reference" and runs_here(name)]
# The Pallas interpreter compiles slowly: random shapes for it are in tests/pallas (with small
# blocks); here it runs at the default blocks at fixed edge lengths and in bfloat16.
XLA_ALGORITHMS = [name for name in FAST_ALGORITHMS if name != "pallas"]


def _check_against_reference(x, algorithm, dtype, **options):
    args = scan_args(x, dtype)
    cotangent = jnp.asarray(np.random.default_rng(0).normal(size=x.u.shape), jnp.float32)
    got = value_and_grads(selective_scan, args, cotangent, algorithm=algorithm, **options)
    want = value_and_grads(selective_scan, args, cotangent, algorithm="reference", **options)
    assert_matches(args, got, want, algorithm)


# At fixed shapes, all 8 option combinations of an algorithm run as one program, and each of the
# 8 tests (one a combination) checks its part (tests/ssm/cases.SharedSweeps).
SWEEPS = SharedSweeps()


def _check_combination(request, seed, algorithm, dtype, shape, combination):
    def sweeps(seed):
        x = random_inputs(seed, *shape)
        args = scan_args(x, dtype)
        cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=x.u.shape), jnp.float32)
        return args, *sweep_against_reference(selective_scan, args, cotangent, algorithm=algorithm)

    group = (algorithm, jnp.dtype(dtype).name, shape)
    args, got, want = SWEEPS.get(request, seed, group, sweeps)
    name = OPTION_IDS[OPTION_COMBOS.index(combination)]
    assert_matches(args, got[name], want[name], f"{algorithm} {name}")


@pytest.mark.parametrize("algorithm", XLA_ALGORITHMS)
@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
@settings(max_examples=2)  # 24 cases, each example compiles two gradient programs
@given(
    b=st.integers(1, 2),
    l=st.one_of(st.just(1), st.integers(2, 40)),
    d=st.integers(1, 5),
    n=st.integers(1, 4),
    with_D=st.booleans(),
    with_z=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_reference_float32(
    algorithm, reverse, mask, residual, b, l, d, n, with_D, with_z, seed
):
    x = random_inputs(seed, b, l, d, n, with_D=with_D, with_z=with_z)
    _check_against_reference(
        x, algorithm, jnp.float32, reverse=reverse, mask_diagonal=mask, residual=residual
    )


# L = 1, and an odd L that is not a multiple of the default chunk (16): several chunks and a
# remainder.
@pytest.mark.parametrize("algorithm", FAST_ALGORITHMS)
@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
@pytest.mark.parametrize("l", [1, 53])
def test_matches_reference_at_edge_lengths(request, algorithm, reverse, mask, residual, l, seed):
    combination = (reverse, mask, residual)
    _check_combination(request, seed, algorithm, jnp.float32, (2, l, 3, 2), combination)


@pytest.mark.parametrize("algorithm", FAST_ALGORITHMS)
@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
def test_matches_reference_bfloat16(request, algorithm, reverse, mask, residual, seed):
    combination = (reverse, mask, residual)
    _check_combination(request, seed, algorithm, jnp.bfloat16, (2, 21, 4, 3), combination)


@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
@settings(max_examples=2)  # 8 cases; each example compiles two gradient programs
@given(
    l=st.integers(1, 30),
    d=st.integers(1, 6),
    chunk_size=st.integers(1, 12),
    channel_block=st.one_of(st.none(), st.integers(1, 6)),
    seed=st.integers(0, 2**32 - 1),
)
def test_chunked_blockings_match_reference(
    reverse, mask, residual, l, d, chunk_size, channel_block, seed
):
    """Any chunk size and channel block: many chunks, remainders, blocks that do not divide d,
    in both directions (reversed, the remainder is the first chunk of the sequence)."""
    x = random_inputs(seed, 2, l, d, 3)
    all_args = scan_args(x, jnp.float32)
    args = {k: all_args[k] for k in ("u", "delta", "A", "B", "C")}  # chunked.scan: no D, no z
    cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=x.u.shape), jnp.float32)
    options = {"reverse": reverse, "mask_diagonal": mask, "residual": residual}
    blocks = ScanBlocks(chunk_size, channel_block)
    y, grads = value_and_grads(chunked.scan, args, cotangent, blocks=blocks, **options)
    y_ref, grads_ref = value_and_grads(
        selective_scan, args, cotangent, algorithm="reference", **options
    )
    # y itself, not the scalar sum(cotangent * y): that sum can cancel to a small fraction of
    # its terms, and float32 rounding of the terms then dominates its relative error.
    assert_close(y, y_ref, TOLERANCE["float32"], "y")
    for key in args:
        assert_close(grads[key], grads_ref[key], GRAD_TOLERANCE["float32"], f"d{key}")


@pytest.mark.parametrize(
    ("algorithm", "variant", "blocks"),
    [
        ("chunked", "sequential", ScanBlocks(chunk_size=5, channel_block=3)),
        ("pallas", "sequential", ScanBlocks(4, 2, subchunk_size=4, segments=3)),
        ("pallas", "associative", ScanBlocks(chunk_size=4, channel_block=4, num_warps=1)),
    ],
    ids=["chunked", "pallas-sequential", "pallas-associative"],
)
def test_public_api_carries_every_tunable(algorithm, variant, blocks, seed):
    """Blocks and variant given to `selective_scan` reach the algorithm: the result still
    equals the reference, and a tiling the algorithm cannot take is refused by it."""
    x = random_inputs(seed, 2, 13, 5, 3)
    vmp = {"reverse": True, "mask_diagonal": True, "residual": True}
    _check_against_reference(x, algorithm, jnp.float32, blocks=blocks, variant=variant, **vmp)


def test_block_sizes_are_checked_for_the_algorithm_used():
    args = scan_args(random_inputs(0, 1, 4, 6, 2), jnp.float32)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        ScanBlocks(chunk_size=0)
    with pytest.raises(ValueError, match="segments must be >= 1, got 0"):
        ScanBlocks(segments=0)
    assert ScanBlocks.parse("16,32,4,2,8") == ScanBlocks(16, 32, 4, 2, segments=8)
    assert ScanBlocks.parse("16,32,4,2,8,256").tpu_channel_block == 256
    with pytest.raises(ValueError, match=r"q,c,w\[,s\[,g\[,t\]\]\], got '1,2,3,4,5,6,7'"):
        ScanBlocks.parse("1,2,3,4,5,6,7")
    with pytest.raises(ValueError, match="tpu_channel_block must be >= 1, got 0"):
        ScanBlocks(tpu_channel_block=0)
    odd = ScanBlocks(channel_block=6)
    with pytest.raises(ValueError, match="channel_block must be a power of two.*got 6"):
        selective_scan(**args, algorithm="pallas", blocks=odd)
    assert selective_scan(**args, algorithm="chunked", blocks=odd).shape == (1, 4, 6)
    with pytest.raises(ValueError, match="unknown variant 'blocked'"):
        selective_scan(**args, algorithm="chunked", variant="blocked")
