"""Bad input to selective_scan: a ValueError naming the argument, its shape, the expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.ssm.cases import random_inputs, scan_args
from vmp_jax.ssm import selective_scan


@pytest.fixture
def args():
    return scan_args(random_inputs(0, 2, 5, 3, 4), jnp.float32)


def _replace(args, **changes):
    return {**args, **changes}


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("u", np.zeros((2, 5)), r"u has shape \(2, 5\).*rank 3 \(batch, L, D\)"),
        ("u", np.zeros((2, 0, 3)), r"u has shape \(2, 0, 3\).*at least one token"),
        ("delta", np.zeros((2, 5, 4)), r"delta has shape \(2, 5, 4\).*\(2, 5, 3\)"),
        ("delta", np.zeros((1, 5, 3)), r"delta has shape \(1, 5, 3\).*\(2, 5, 3\)"),
        ("A", -np.ones((4, 4)), r"A has shape \(4, 4\).*\(D, N\) with D = 3"),
        ("A", -np.ones((3,)), r"A has shape \(3,\).*\(D, N\)"),
        ("B", np.zeros((2, 5, 3)), r"B has shape \(2, 5, 3\).*\(batch, L, N\) = \(2, 5, 4\)"),
        ("C", np.zeros((2, 6, 4)), r"C has shape \(2, 6, 4\).*\(2, 5, 4\)"),
        ("C", np.zeros((5, 4)), r"C has shape \(5, 4\).*\(2, 5, 4\)"),
        ("D", np.zeros((1,)), r"D has shape \(1,\).*\(D,\) = \(3,\)"),
        ("D", np.zeros((2, 3)), r"D has shape \(2, 3\).*\(3,\)"),
        ("z", np.zeros((2, 5, 1)), r"z has shape \(2, 5, 1\).*\(2, 5, 3\)"),
        ("u", np.zeros((2, 5, 3), np.int32), r"u has .*dtype int32.*floating"),
        ("B", np.zeros((2, 5, 4), bool), r"B has .*dtype bool.*floating"),
        ("z", np.zeros((2, 5, 3), np.complex64), r"z has .*complex64.*real floating"),
    ],
)
def test_bad_shapes_and_dtypes_are_named(args, name, bad, message):
    with pytest.raises(ValueError, match=message):
        selective_scan(**_replace(args, **{name: jnp.asarray(bad)}))


@pytest.mark.parametrize("bad_value", [0.0, 0.5, np.nan])
def test_non_negative_A_is_rejected(args, bad_value):
    A = np.array(args["A"])
    A[1, 2] = bad_value
    with pytest.raises(ValueError, match=r"A of shape \(3, 4\) must be strictly negative"):
        selective_scan(**_replace(args, A=jnp.asarray(A)))


def test_unknown_algorithm_lists_the_valid_ones(args):
    with pytest.raises(
        ValueError, match=r"unknown algorithm 'mamba'.*auto, reference, sequential.*pallas"
    ):
        selective_scan(**args, algorithm="mamba")


def test_shapes_are_checked_under_jit_too(args):
    bad = _replace(args, B=args["B"][:, :, :3])
    with pytest.raises(ValueError, match=r"B has shape \(2, 5, 3\)"):
        jax.jit(lambda a: selective_scan(**a))(bad)


def test_valid_input_passes_without_broadcasting(args):
    y = selective_scan(**args)
    assert y.shape == (2, 5, 3) and y.dtype == jnp.float32
