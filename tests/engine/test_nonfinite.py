"""`steps.all_finite`, the rule the train step keeps its state by: every floating element of
the gradients and the loss finite; integer leaves are not asked. That a non-finite step then
changes nothing of the state (weights, moments, EMA, RNG counts) a real run checks:
tests/train/test_nonfinite.py."""

import numpy as np

from vmp_jax.engine import steps


def test_finite_means_every_element():
    assert bool(steps.all_finite({"a": np.ones(3)}, np.float32(2.0)))
    assert not bool(steps.all_finite({"a": np.array([1.0, np.inf])}, np.float32(2.0)))
    assert not bool(steps.all_finite({"a": np.array([np.nan, 1.0])}, np.float32(2.0)))
    assert not bool(steps.all_finite({"a": np.ones(3)}, np.float32(np.nan)))
    assert bool(steps.all_finite({"n": np.arange(3)}, np.float32(1.0)))  # integers: skipped
