"""Tests for fedpeft.privacy.accounting against dp-accounting as the oracle."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import (
    DEFAULT_RDP_ORDERS,
    compute_epsilon,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.privacy import (
    PrivacyAccountant,
    PrivacyBudget,
    UnsupportedAccountingError,
    client_level_event,
    epsilon_after,
    record_level_epsilon,
)

DELTA = 1e-5


def _oracle_poisson(q: float, sigma: float, rounds: int, kind: str = "rdp") -> float:
    acc = RdpAccountant() if kind == "rdp" else PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(event, rounds)
    return float(acc.get_epsilon(DELTA))


def test_poisson_epsilon_equals_dp_accounting() -> None:
    ours = epsilon_after(100, 1.1, DELTA, "poisson", sample_rate=0.05)
    assert ours == pytest.approx(_oracle_poisson(0.05, 1.1, 100), rel=1e-12)


def test_poisson_pld_equals_dp_accounting_pld() -> None:
    ours = epsilon_after(50, 1.1, DELTA, "poisson", sample_rate=0.05, accountant="pld")
    assert ours == pytest.approx(_oracle_poisson(0.05, 1.1, 50, "pld"), rel=1e-9)
    # PLD is the tighter accountant
    assert ours <= _oracle_poisson(0.05, 1.1, 50, "rdp")


def test_poisson_rate_from_client_counts() -> None:
    by_counts = epsilon_after(
        20, 1.0, DELTA, "poisson", num_clients=100, clients_per_round=10
    )
    assert by_counts == pytest.approx(_oracle_poisson(0.1, 1.0, 20), rel=1e-12)


def test_fixed_size_uses_replace_one_and_sensitivity_2c() -> None:
    # Oracle: replace-one RDP of sampling w/o replacement with the Gaussian's
    # std/sensitivity = σC / 2C = σ/2 (dp-accounting does not apply the 2 itself).
    sigma, n, m, rounds = 1.2, 200, 10, 30
    oracle = RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    oracle.compose(
        dp_accounting.SampledWithoutReplacementDpEvent(
            n, m, dp_accounting.GaussianDpEvent(sigma / 2)
        ),
        rounds,
    )
    ours = epsilon_after(
        rounds, sigma, DELTA, "fixed", num_clients=n, clients_per_round=m
    )
    assert ours == pytest.approx(oracle.get_epsilon(DELTA), rel=1e-12)


def test_full_participation_equals_gaussian_with_sensitivity_2c() -> None:
    # m = N: no sampling; replacing one client moves the sum by up to 2C, so the
    # Gaussian RDP at order α is α (2C)² / (2 σ² C²) = 2α/σ² (Mironov 2017, Prop. 7).
    sigma, rounds = 3.0, 10
    orders = np.array(DEFAULT_RDP_ORDERS)
    rdp = rounds * 2.0 * orders / sigma**2
    hand, _ = compute_epsilon(orders, rdp, DELTA)
    ours = epsilon_after(
        rounds, sigma, DELTA, "fixed", num_clients=8, clients_per_round=8
    )
    assert ours == pytest.approx(hand, rel=1e-9)


def test_pld_refuses_fixed_size_sampling_with_a_hint() -> None:
    event = client_level_event(1.0, "fixed", num_clients=100, clients_per_round=10)
    acc = PrivacyAccountant("pld", DELTA)
    with pytest.raises(UnsupportedAccountingError, match="accountant='rdp'"):
        acc.compose(event)
    assert acc.epsilon() == 0.0 and acc.ledger == ()


def test_accountant_composes_round_by_round() -> None:
    event = client_level_event(1.1, "poisson", sample_rate=0.05)
    acc = PrivacyAccountant("rdp", DELTA)
    assert acc.epsilon() == 0.0
    for _ in range(10):
        acc.compose(event)
    acc.compose(event, count=5)
    assert acc.epsilon() == pytest.approx(_oracle_poisson(0.05, 1.1, 15), rel=1e-12)
    assert sum(count for _, count in acc.ledger) == 15


def test_accountant_refuses_mixed_neighbouring_relations() -> None:
    acc = PrivacyAccountant("rdp", DELTA)
    acc.compose(client_level_event(1.0, "poisson", sample_rate=0.1))
    with pytest.raises(ValueError, match="REPLACE_ONE"):
        acc.compose(
            client_level_event(1.0, "fixed", num_clients=10, clients_per_round=1)
        )


def test_would_exceed_stops_before_the_round_that_overshoots() -> None:
    event = client_level_event(1.0, "poisson", sample_rate=0.1)
    budget = PrivacyBudget(epsilon=2.0, delta=DELTA)
    acc = PrivacyAccountant("rdp", DELTA)
    rounds = 0
    while not acc.would_exceed(budget, event):
        acc.compose(event)
        rounds += 1
    assert acc.epsilon() <= budget.epsilon
    assert _oracle_poisson(0.1, 1.0, rounds + 1) > budget.epsilon
    assert rounds == len(acc.ledger)  # would_exceed composed nothing


def test_budget_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"PrivacyBudget\.epsilon"):
        PrivacyBudget(epsilon=0.0, delta=1e-5)
    with pytest.raises(ValueError, match=r"PrivacyBudget\.delta"):
        PrivacyBudget(epsilon=1.0, delta=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling": "poisson"}, "sample_rate"),
        ({"sampling": "poisson", "sample_rate": 1.5}, "sample_rate"),
        ({"sampling": "fixed", "num_clients": 10}, "clients_per_round"),
        ({"sampling": "fixed", "num_clients": 10, "clients_per_round": 11}, "<="),
        ({"sampling": "uniform", "sample_rate": 0.1}, "sampling"),
    ],
)
def test_event_arguments_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        client_level_event(1.0, **kwargs)  # type: ignore[arg-type]


def test_noise_multiplier_must_be_positive() -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        client_level_event(0.0, "poisson", sample_rate=0.1)


def test_record_level_epsilon_equals_dp_accounting() -> None:
    ours = record_level_epsilon(0.9, 64 / 1000, 300, DELTA)
    assert ours == pytest.approx(_oracle_poisson(64 / 1000, 0.9, 300), rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    rounds=st.integers(1, 300),
    extra=st.integers(1, 300),
    sigma=st.floats(0.5, 5.0),
    q=st.floats(0.01, 0.5),
)
def test_epsilon_increases_with_rounds(
    rounds: int, extra: int, sigma: float, q: float
) -> None:
    fewer = epsilon_after(rounds, sigma, DELTA, "poisson", sample_rate=q)
    more = epsilon_after(rounds + extra, sigma, DELTA, "poisson", sample_rate=q)
    assert more >= fewer


@settings(max_examples=15, deadline=None)
@given(
    sigma=st.floats(0.5, 5.0),
    factor=st.floats(1.01, 3.0),
    sampling=st.sampled_from(["poisson", "fixed"]),
)
def test_epsilon_decreases_with_noise(
    sigma: float, factor: float, sampling: str
) -> None:
    sizes = (
        {"sample_rate": 0.05}
        if sampling == "poisson"
        else {"num_clients": 100, "clients_per_round": 5}
    )
    low = epsilon_after(50, sigma, DELTA, sampling, **sizes)  # type: ignore[arg-type]
    high = epsilon_after(50, sigma * factor, DELTA, sampling, **sizes)  # type: ignore[arg-type]
    assert high < low
