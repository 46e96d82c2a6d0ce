"""The `reference` algorithm and the M and G matrices against SPEC, on their own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ssm.cases import (
    OPTION_COMBOS,
    OPTION_IDS,
    TOLERANCE,
    assert_close,
    random_inputs,
    scan_args,
    spec_loop,
)
from vmp_jax.ssm import selective_scan, similarity_matrix, state_kernel


def _check_against_loop(x, dtype, **options):
    """reference in `dtype` (under x64 for float64) vs the float64 SPEC loop."""
    want = spec_loop(x, **options)
    with jax.enable_x64(dtype == jnp.float64):
        got = selective_scan(**scan_args(x, dtype), **options, algorithm="reference")
        assert got.dtype == dtype
        assert_close(got, want, TOLERANCE[jnp.dtype(dtype).name], "reference vs loop")


@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 9, 3, 2), (1, 16, 2, 4)])
def test_reference_matches_spec_loop_in_float64(shape, reverse, mask, residual, seed):
    x = random_inputs(seed, *shape)
    _check_against_loop(x, jnp.float64, reverse=reverse, mask_diagonal=mask, residual=residual)


@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
@given(
    l=st.integers(1, 24),
    d=st.integers(1, 4),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_reference_matches_spec_loop_in_float32(reverse, mask, residual, l, d, n, seed):
    x = random_inputs(seed, 2, l, d, n)
    _check_against_loop(x, jnp.float32, reverse=reverse, mask_diagonal=mask, residual=residual)


def _matrices(seed, l=7, d=3, n=2, **options):
    x = random_inputs(seed, 1, l, d, n)
    with jax.enable_x64(True):
        args = scan_args(x, jnp.float64)
        return x, np.asarray(
            similarity_matrix(args["delta"], args["A"], args["B"], args["C"], **options)
        )


@pytest.mark.parametrize("residual", [False, True])
def test_similarity_matrix_triangles_and_masked_diagonal(residual, seed):
    _, fwd = _matrices(seed, residual=residual)
    _, bwd = _matrices(seed, residual=residual, reverse=True)
    _, bwd_masked = _matrices(seed, residual=residual, reverse=True, mask_diagonal=True)
    assert np.all(np.triu(fwd, 1) == 0), "causal M must be lower-triangular"
    assert np.all(np.tril(bwd, -1) == 0), "reverse M must be upper-triangular"
    assert np.all(np.abs(np.diagonal(bwd, axis1=-2, axis2=-1)) > 0)
    assert np.all(np.diagonal(bwd_masked, axis1=-2, axis2=-1) == 0)
    off_diagonal = ~np.eye(fwd.shape[-1], dtype=bool)
    np.testing.assert_array_equal(bwd_masked[..., off_diagonal], bwd[..., off_diagonal])


@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
def test_similarity_matrix_reproduces_the_scan(reverse, mask, residual, seed):
    """y = M u + D u, the matrix view of SPEC section 1."""
    x, M = _matrices(seed, reverse=reverse, mask_diagonal=mask, residual=residual)
    y = np.einsum("bdts,bsd->btd", M, x.u) + x.D * x.u
    want = spec_loop(x._replace(z=None), reverse=reverse, mask_diagonal=mask, residual=residual)
    assert_close(y, want, TOLERANCE["float64"], "M u + D u vs loop")


def test_state_kernel_follows_the_residual_recursion(seed):
    """SPEC section 3: G[s, s] = b_s and G[t, s] = a_t G[t-1, s] + a_s b_s for t > s."""
    x = random_inputs(seed, 1, 6, 2, 3)
    with jax.enable_x64(True):
        args = scan_args(x, jnp.float64)
        G = np.asarray(state_kernel(args["delta"], args["A"], args["B"], residual=True))[0]
    a = np.exp(x.delta[0][..., None] * x.A)  # (l, d, n)
    b = x.delta[0][..., None] * x.B[0][:, None, :]
    for s in range(6):
        np.testing.assert_allclose(G[s, s], b[s], rtol=1e-12)
        for t in range(s + 1, 6):
            np.testing.assert_allclose(G[t, s], a[t] * G[t - 1, s] + a[s] * b[s], rtol=1e-12)
        assert np.all(G[:s, s] == 0)
