"""Fixed-point quantization: overflow bound, error bound, unbiasedness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.secagg.quantize import (
    check_overflow,
    dequantize_sum,
    largest_safe_clients,
    quantization_step,
    quantize,
    safe_value_bits,
    sum_error_bound,
)


def test_largest_safe_clients_by_hand() -> None:
    # b = 8, q = 6: N · 63 < 256  <=>  N <= 4
    assert largest_safe_clients(6, 8) == 4
    check_overflow(4, 6, 8)


def test_overflow_raises_naming_n_b_and_largest_safe_n() -> None:
    with pytest.raises(ValueError, match=r"N=5.*b=8.*largest safe N is 4"):
        check_overflow(5, 6, 8)


@given(n=st.integers(1, 10_000), bits=st.integers(14, 62))
@settings(max_examples=100, deadline=None)
def test_safe_value_bits_is_the_largest_q_that_fits(n: int, bits: int) -> None:
    q = safe_value_bits(n, bits)
    assert n * (2**q - 1) < 2**bits
    if q < 52:
        assert n * (2 ** (q + 1) - 1) >= 2**bits


def test_safe_value_bits_raises_when_nothing_fits() -> None:
    with pytest.raises(ValueError, match=r"N=256.*b=8"):
        safe_value_bits(256, 8)


@given(
    n=st.integers(1, 40),
    q=st.integers(2, 30),
    r=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=60, deadline=None)
def test_sum_error_is_below_n_steps(n: int, q: int, r: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bits = max(q + n.bit_length(), 8)
    xs = rng.uniform(-r, r, size=(n, 50))
    total = np.zeros(50, dtype=np.uint64)
    for x in xs:
        total += quantize(x, r, q, rng)
    got = dequantize_sum(total, n, r, q, bits)
    error = np.abs(got - xs.sum(axis=0))
    assert np.all(error <= sum_error_bound(n, r, q) * (1 + 1e-9))


def test_step_by_hand() -> None:
    assert quantization_step(1.0, 2) == pytest.approx(2.0 / 3.0)
    assert sum_error_bound(5, 1.0, 2) == pytest.approx(10.0 / 3.0)


def test_levels_stay_in_range_and_clip() -> None:
    rng = np.random.default_rng(0)
    levels = quantize(np.array([-5.0, -1.0, 0.0, 1.0, 5.0]), 1.0, 4, rng)
    assert levels.dtype == np.uint64
    assert levels[0] == 0 and levels[1] == 0
    assert levels[3] == 15 and levels[4] == 15


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    x = np.full(200_000, 0.3)
    q, r = 3, 1.0  # step 2/7: 0.3 sits between two levels
    mean = dequantize_sum(quantize(x, r, q, rng), 1, r, q, 8).mean()
    assert mean == pytest.approx(0.3, abs=3e-3)


def test_quantize_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), 1.0, 8, np.random.default_rng(0))


def test_dequantize_refuses_values_above_the_possible_sum() -> None:
    with pytest.raises(ValueError, match="masks were not all removed"):
        dequantize_sum(np.array([100], dtype=np.uint64), 2, 1.0, 4, 16)
