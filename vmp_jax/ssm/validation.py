"""Input checks for `selective_scan`: a bad argument is named with its shape and the expected one.

Shapes and dtypes are always checked; the sign of A only when A is concrete (outside jit), since a
traced value cannot be inspected without a host round trip.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _fail(name: str, x: jax.Array, expected: str) -> None:
    raise ValueError(
        f"selective_scan: {name} has shape {tuple(x.shape)} and dtype {x.dtype}; "
        f"expected {expected}"
    )


def _check_float(name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        _fail(name, x, "a real floating dtype (float32, bfloat16, float16 or float64)")


def _check_shape(name: str, x: jax.Array, expected: tuple[int, ...], legend: str) -> None:
    if tuple(x.shape) != expected:
        _fail(name, x, f"{legend} = {expected}")


def _concrete(x: jax.Array) -> np.ndarray | None:
    """The value of `x` as numpy, or None under a trace."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_inputs(u, delta, A, B, C, D=None, z=None) -> None:
    """Raises ValueError naming the first argument whose rank, shape, dtype or sign is wrong."""
    _check_float("u", u)
    if u.ndim != 3:
        _fail("u", u, "rank 3 (batch, L, D)")
    b, l, d = u.shape
    if l == 0:
        _fail("u", u, "at least one token (L >= 1)")
    _check_float("A", A)
    if A.ndim != 2 or A.shape[0] != d:
        _fail("A", A, f"(D, N) with D = {d} from u")
    n = A.shape[1]
    for name, x, shape, legend in (
        ("delta", delta, (b, l, d), "u's shape (batch, L, D)"),
        ("B", B, (b, l, n), "(batch, L, N)"),
        ("C", C, (b, l, n), "(batch, L, N)"),
    ):
        _check_float(name, x)
        _check_shape(name, x, shape, legend)
    if D is not None:
        _check_float("D", D)
        _check_shape("D", D, (d,), "(D,)")
    if z is not None:
        _check_float("z", z)
        _check_shape("z", z, (b, l, d), "u's shape (batch, L, D)")
    a_value = _concrete(A)
    if a_value is not None and not np.all(a_value < 0):
        raise ValueError(
            f"selective_scan: A of shape {tuple(A.shape)} must be strictly negative "
            f"(A = -exp(A_log)); its largest entry is {np.nanmax(a_value)!r}"
            + (" and it contains NaN" if np.isnan(a_value).any() else "")
        )
