"""FedHFT's clustering feature is scaled to unit length without BLAS (``unit``): a correctly rounded
sum, so the server's clustering gets the same bits whatever kernels the CPU's OpenBLAS picks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from server.strategies._math import unit


def test_unit_golden():
    np.testing.assert_array_equal(unit(np.array([3.0, 4.0])), [0.6, 0.8])
    np.testing.assert_array_equal(unit(np.zeros(3)), np.zeros(3))


def test_the_norm_is_the_square_root_of_the_exact_sum_of_squares_rounded_once():
    v = np.random.default_rng(0).standard_normal(1024) * np.logspace(-8, 8, 1024)
    exact = float(sum(Fraction(float(x * x)) for x in v))  # the squares' sum, rounded once
    np.testing.assert_array_equal(unit(v), v / np.sqrt(exact))


@given(
    arrays(np.float64, st.integers(1, 3000), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    st.integers(0, 2**32 - 1),
)
def test_the_order_of_the_values_does_not_change_a_bit(v, seed):
    perm = np.random.default_rng(seed).permutation(v.size)
    np.testing.assert_array_equal(unit(v[perm]), unit(v)[perm])
