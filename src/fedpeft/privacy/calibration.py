"""Smallest noise multiplier σ whose ε stays within a target: never overshoots.

ε(σ) of a sampled Gaussian composed T times is strictly decreasing in σ, so the
calibrated σ* = min{σ : ε(σ) ≤ ε_target} is found by a bracket search followed
by ``dp_accounting.calibrate_dp_mechanism`` (Brent's method with a bisection
fallback that only returns a point with ε(σ) − ε_target ≤ 0). The result is then
checked once more: the returned σ ALWAYS satisfies ε(σ) ≤ ε_target, and lies
within ``tol`` (absolute, in σ units) above σ*.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fedpeft.privacy.accounting import (
    AccountantKind,
    DpEvent,
    Sampling,
    check_count,
    check_delta,
    check_positive,
    client_level_event,
    dp_accounting,
    epsilon_for,
    make_dp_accountant,
    neighboring_relation,
    record_level_event,
)

DEFAULT_TOL = 1e-4
"""Absolute tolerance on σ: σ* ≤ returned σ ≤ σ* + tol."""

_MAX_DOUBLINGS = 40  # σ up to 2**40: no realistic target needs more


def _bracket(gap: Callable[[float], float]) -> tuple[float, float]:
    """``(lo, hi)`` with ``gap(lo) > 0 >= gap(hi)``, by doubling / halving from 1."""
    hi = 1.0
    for _ in range(_MAX_DOUBLINGS):
        if gap(hi) <= 0:
            break
        hi *= 2.0
    else:
        raise ValueError(
            f"no noise multiplier up to {hi:g} reaches the target epsilon; "
            "raise the target or reduce rounds / the sampling rate"
        )
    lo = hi / 2.0
    for _ in range(_MAX_DOUBLINGS):
        if gap(lo) > 0:
            return lo, hi
        hi, lo = lo, lo / 2.0
    raise ValueError(f"even sigma={lo:g} meets the target; the target is too loose")


def calibrate_noise(
    make_event: Callable[[float], DpEvent],
    target_epsilon: float,
    delta: float,
    accountant: AccountantKind = "rdp",
    tol: float = DEFAULT_TOL,
) -> float:
    """Smallest σ (within ``tol``) with ε(make_event(σ)) ≤ ``target_epsilon``.

    Args:
        make_event: σ ↦ the WHOLE run's DpEvent (already composed over rounds).
        target_epsilon: ε_target > 0.
        delta: δ ∈ (0, 1).
        accountant: ``"rdp"`` or ``"pld"``.
        tol: Absolute tolerance on σ (> 0).

    Returns:
        σ with ε(σ) ≤ ε_target, and σ − σ* ≤ tol.

    Raises:
        ValueError: for invalid arguments or an unreachable target.
    """
    target = check_positive(target_epsilon, "target_epsilon")
    d = check_delta(delta)
    tol = check_positive(tol, "tol")

    def epsilon(sigma: float) -> float:
        return epsilon_for(make_event(sigma), 1, d, accountant)

    def gap(sigma: float) -> float:
        return epsilon(sigma) - target

    lo, hi = _bracket(gap)
    relation = neighboring_relation(make_event(hi))
    sigma = float(
        dp_accounting().calibrate_dp_mechanism(
            lambda: make_dp_accountant(accountant, relation),
            make_event,
            target,
            d,
            bracket_interval=dp_accounting().ExplicitBracketInterval(lo, hi),
            tol=tol,
        )
    )
    if not (math.isfinite(sigma) and gap(sigma) <= 0):
        sigma = hi  # cannot happen per calibrate_dp_mechanism's contract; be safe
    return sigma


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rounds: int,
    sampling: Sampling,
    *,
    sample_rate: float | None = None,
    num_clients: int | None = None,
    clients_per_round: int | None = None,
    accountant: AccountantKind = "rdp",
    tol: float = DEFAULT_TOL,
) -> float:
    """Client-level σ for ``rounds`` rounds of DP-FedAvg at (ε_target, δ).

    Sampling arguments as in
    :func:`fedpeft.privacy.accounting.client_level_event`. The returned σ never
    overshoots: ``epsilon_after(rounds, σ, ...) <= target_epsilon``.
    """
    check_count(rounds, "rounds")

    def make_event(sigma: float) -> DpEvent:
        one = client_level_event(
            sigma,
            sampling,
            sample_rate=sample_rate,
            num_clients=num_clients,
            clients_per_round=clients_per_round,
        )
        return dp_accounting().SelfComposedDpEvent(one, rounds)

    return calibrate_noise(make_event, target_epsilon, delta, accountant, tol)


def calibrate_record_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantKind = "rdp",
    tol: float = DEFAULT_TOL,
) -> float:
    """Record-level σ for ``steps`` Poisson-sampled DP-SGD steps at (ε_target, δ).

    Never overshoots: ``record_level_epsilon(σ, q, steps, δ) <= target_epsilon``.
    """
    check_count(steps, "steps")

    def make_event(sigma: float) -> DpEvent:
        one = record_level_event(sigma, sample_rate)
        return dp_accounting().SelfComposedDpEvent(one, steps)

    return calibrate_noise(make_event, target_epsilon, delta, accountant, tol)
