"""Tests for the plain ``dirichlet`` partitioner (each class cut by Dir(alpha))."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedpeft.config import ConfigError
from fedpeft.data.partition import (
    PARTITIONERS,
    PartitionError,
    PartitionInputs,
    partition_config,
    partition_indices,
)

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _split(
    labels: np.ndarray, num_clients: int, seed: int, **options: object
) -> list[np.ndarray]:
    """The registered split function itself, without partition_indices' checks,
    so a broken cover or a short client shows up here and not as its error."""
    spec = partition_config("dirichlet", **options)
    split = PARTITIONERS.factory("dirichlet").split
    return split(labels.astype(np.int64), num_clients, seed, spec, PartitionInputs())


def _max_tv_to_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Largest total-variation distance between a client's and the pooled mix."""
    num_classes = int(labels.max()) + 1
    global_mix = np.bincount(labels, minlength=num_classes) / len(labels)
    distances = [
        0.5
        * np.abs(
            np.bincount(labels[p], minlength=num_classes) / len(p) - global_mix
        ).sum()
        for p in parts
    ]
    return float(max(distances))


@PROPERTY_SETTINGS
@given(
    num_classes=st.integers(1, 6),
    n=st.integers(30, 400),
    num_clients=st.integers(1, 8),
    min_size=st.integers(1, 4),
    alpha=st.sampled_from([0.05, 0.3, 1.0, 20.0]),
    data_seed=st.integers(0, 2**16),
    seed=st.integers(0, 2**16),
)
def test_success_is_a_disjoint_cover_with_every_client_at_min_size(
    num_classes: int,
    n: int,
    num_clients: int,
    min_size: int,
    alpha: float,
    data_seed: int,
    seed: int,
) -> None:
    labels = np.random.default_rng(data_seed).integers(0, num_classes, n)

    try:
        parts = _split(labels, num_clients, seed, alpha=alpha, min_size=min_size)
    except PartitionError:
        return

    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    flat = np.concatenate(parts)
    assert len(flat) == n
    assert np.array_equal(np.sort(flat), np.arange(n))
    assert min(len(p) for p in parts) >= min_size


def test_same_seed_same_partition_other_seed_differs() -> None:
    labels = np.repeat(np.arange(3), [600, 900, 500])

    first = _split(labels, 20, 7, alpha=0.5, min_size=10)
    again = _split(labels, 20, 7, alpha=0.5, min_size=10)
    other = _split(labels, 20, 8, alpha=0.5, min_size=10)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_indices_inside_a_client_are_not_grouped_by_class() -> None:
    labels = np.repeat(np.arange(2), 500)

    parts = _split(labels, 4, 0, alpha=10.0, min_size=10)

    # Sorted by class, a client's labels would change value exactly once.
    assert all(np.count_nonzero(np.diff(labels[p])) > 1 for p in parts)


def test_many_classes_strong_skew_builds() -> None:
    labels = np.repeat(np.arange(20), 100)  # 20 classes x 100

    parts = partition_indices(labels, 20, "dirichlet", seed=0, alpha=0.1, min_size=10)

    assert min(len(p) for p in parts) >= 10
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(2000))
    # Strong skew: a typical client holds few of the 20 classes.
    held = [len(np.unique(labels[p])) for p in parts]
    assert np.median(held) <= 10


def test_two_classes_strong_skew_fails_and_says_why_with_numbers() -> None:
    labels = np.repeat(np.arange(2), 1000)  # Rotten Tomatoes-like
    # Oracle: a client's share of a class is Beta(alpha, (K - 1) alpha)
    # (the Dirichlet's marginal); estimate P(client < 20) by Monte Carlo.
    shares = np.random.default_rng(12345).beta(0.1, 19 * 0.1, (2, 200_000))
    expected_short = float(np.mean(1000 * shares.sum(axis=0) < 20))

    with pytest.raises(PartitionError) as caught:
        partition_indices(labels, 20, "dirichlet", seed=0, alpha=0.1, min_size=20)

    message = str(caught.value)
    assert "0 of 100 draws" in message
    assert "smallest client had 0 examples" in message
    estimate = re.search(r"P\(client < min_size\) = ([0-9.]+)", message)
    assert estimate is not None
    assert abs(float(estimate.group(1)) - expected_short) < 0.05
    assert "2 classes" in message and "20 clients" in message
    assert "fewer clients, a larger alpha or a smaller min_size" in message
    assert "dirichlet-balanced" in message


def test_max_draws_bounds_the_attempts() -> None:
    labels = np.repeat(np.arange(2), 1000)

    with pytest.raises(PartitionError, match="0 of 7 draws"):
        partition_indices(
            labels, 20, "dirichlet", seed=0, alpha=0.1, min_size=20, max_draws=7
        )
    with pytest.raises(ConfigError, match="max_draws"):
        partition_config("dirichlet", max_draws=0)


def test_more_draws_rescue_a_rarely_feasible_case() -> None:
    # 3 classes, 20 clients, alpha 0.1, min_size 1: most draws leave some
    # client empty (flwr-datasets' 11 draws failed here); later draws fit.
    labels = np.repeat(np.arange(3), [600, 900, 500])

    with pytest.raises(PartitionError):
        partition_indices(
            labels, 20, "dirichlet", seed=0, alpha=0.1, min_size=1, max_draws=11
        )
    parts = partition_indices(labels, 20, "dirichlet", seed=0, alpha=0.1, min_size=1)

    assert min(len(p) for p in parts) >= 1


def test_large_alpha_gives_every_client_close_to_the_global_mix() -> None:
    labels = np.repeat(np.arange(3), [600, 900, 500])

    near = _split(labels, 20, 0, alpha=100.0, min_size=10)
    skewed = _split(labels, 20, 0, alpha=0.5, min_size=10)

    assert _max_tv_to_global(labels, near) < 0.12
    assert _max_tv_to_global(labels, skewed) > 0.3
