"""Privacy accounting for client-level and record-level DP, on Google's dp-accounting.

A mechanism is an immutable ``dp_accounting.DpEvent`` value built here from the
noise multiplier and the sampling actually used; a :class:`PrivacyAccountant`
composes events and reports ε at a δ.

Client-level DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models", Algorithm 1 with the fixed-denominator estimator
f̃_f, §2): every sampled client's update is clipped to ‖Δ̂_k‖₂ ≤ C, the server
releases ``(Σ_{k∈S} Δ̂_k + N(0, σ²C²I)) / m̄`` with EQUAL weights and a public
denominator m̄ (the expected number of clients). Sensitivity of the sum:

* **Poisson sampling** (each of N clients joins with probability q, add/remove-one
  neighbours): one client changes the sum by at most C, so a round is
  ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` (Mironov et al. 2019,
  "Rényi DP of the Sampled Gaussian Mechanism").
* **Fixed-size sampling** (m of N without replacement, as
  :func:`fedpeft.strategies.sample_clients` draws; replace-one neighbours with N
  public): replacing one client changes the sum by ``Δ̂_k − Δ̂'_k``, of norm up to
  **2C**. dp-accounting's bound for this event (Wang, Balle & Kasiviswanathan
  2019, Thm. 27) reads the inner noise multiplier as std / L2-sensitivity and, in
  version 0.6.0, does not apply that factor 2 itself (google/differential-privacy
  issue #378). The event built here therefore carries ``σ/2``:
  ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(σ/2))``. ε under
  replace-one is a different (roughly twice as strong a) notion than under
  add/remove; compare ε's only within one sampling scheme.

Example-weighted or update-dependent weights change the sensitivity (a weight
n_k/Σn is data-dependent and unbounded); see
:mod:`fedpeft.privacy.compatibility`.

dp-accounting's PLD accountant does not support sampling without replacement;
asking it to compose such an event raises :class:`UnsupportedAccountingError`
naming the fix (``accountant="rdp"`` or Poisson sampling).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from dp_accounting import NeighboringRelation as Relation

Sampling = Literal["poisson", "fixed"]
AccountantKind = Literal["rdp", "pld"]
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
ACCOUNTANT_KINDS: tuple[str, ...] = get_args(AccountantKind)

DpEvent = Any
"""A ``dp_accounting.DpEvent`` (the library ships no type information)."""


# dp-accounting logs through absl every Rényi order it drops (dropping one only
# makes ε larger, i.e. conservative); in a training log that is noise.
logging.getLogger("absl").setLevel(logging.ERROR)


def dp_accounting() -> Any:
    """The ``dp_accounting`` package, imported on first use: it brings
    ``scipy.signal`` (0.7–0.85 s of a run's start), which a run without
    differential privacy never needs."""
    import dp_accounting as package

    return package


class UnsupportedAccountingError(ValueError):
    """The chosen accountant cannot compose this event (message names the fix)."""


# -- validation ---------------------------------------------------------------


def check_positive(value: float, name: str) -> float:
    """``value`` as a float if finite and > 0, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_delta(delta: float, name: str = "delta") -> float:
    """``delta`` as a float if in (0, 1), else ``ValueError`` naming it.

    Choose δ well below 1/N for N clients (records); 1/N^1.1 is common.
    """
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise ValueError(f"{name} must be in (0, 1), got {delta!r}")
    if not 0 < delta < 1:
        raise ValueError(f"{name} must be in (0, 1), got {delta!r}")
    return float(delta)


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if an integer ≥ ``minimum``, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    """``value`` if one of ``allowed``, else ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


# -- events -------------------------------------------------------------------


def _poisson_rate(
    sample_rate: float | None, num_clients: int | None, clients_per_round: int | None
) -> float:
    if sample_rate is None:
        if num_clients is None or clients_per_round is None:
            raise ValueError(
                "poisson sampling needs sample_rate=q, or num_clients and "
                "clients_per_round (then q = clients_per_round / num_clients)"
            )
        n = check_count(num_clients, "num_clients")
        m = check_count(clients_per_round, "clients_per_round")
        sample_rate = m / n
    q = check_positive(sample_rate, "sample_rate")
    if q > 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {q!r}")
    return q


def client_level_event(
    noise_multiplier: float,
    sampling: Sampling,
    *,
    sample_rate: float | None = None,
    num_clients: int | None = None,
    clients_per_round: int | None = None,
) -> DpEvent:
    """The DpEvent of ONE round of DP-FedAvg (McMahan et al. 2018, Algorithm 1).

    Args:
        noise_multiplier: σ > 0; the server's noise on the sum has std σ·C.
        sampling: ``"poisson"`` (each client joins with probability q) or
            ``"fixed"`` (m of N uniformly without replacement).
        sample_rate: q ∈ (0, 1] for Poisson sampling.
        num_clients: N (fixed-size sampling; or with ``clients_per_round`` to
            derive q = m/N for Poisson).
        clients_per_round: m ≤ N.

    Returns:
        ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` (add/remove-one), or
        ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(σ/2))``
        (replace-one: sensitivity 2C, see the module docstring).

    Raises:
        ValueError: for σ ≤ 0, an unknown sampling, or missing/invalid sizes.
    """
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    check_choice(sampling, "sampling", SAMPLINGS)
    dp = dp_accounting()
    if sampling == "poisson":
        q = _poisson_rate(sample_rate, num_clients, clients_per_round)
        return dp.PoissonSampledDpEvent(q, dp.GaussianDpEvent(sigma))
    if num_clients is None or clients_per_round is None or sample_rate is not None:
        raise ValueError(
            "fixed-size sampling needs num_clients=N and clients_per_round=m "
            "(and no sample_rate)"
        )
    n = check_count(num_clients, "num_clients")
    m = check_count(clients_per_round, "clients_per_round")
    if m > n:
        raise ValueError(f"clients_per_round={m} must be <= num_clients={n}")
    replace_one_sigma = sigma / 2.0  # std σC over sensitivity 2C
    return dp.SampledWithoutReplacementDpEvent(
        n, m, dp.GaussianDpEvent(replace_one_sigma)
    )


def record_level_event(noise_multiplier: float, sample_rate: float) -> DpEvent:
    """One DP-SGD step with Poisson-sampled batches (Abadi et al. 2016, §3.1).

    Per-example clipping to C and noise N(0, σ²C²) on the sum, each record joining
    the batch with probability q (add/remove-one):
    ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``.

    Raises:
        ValueError: for σ ≤ 0 or q outside (0, 1].
    """
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    q = _poisson_rate(sample_rate, None, None)
    dp = dp_accounting()
    return dp.PoissonSampledDpEvent(q, dp.GaussianDpEvent(sigma))


def neighboring_relation(event: DpEvent) -> Relation:
    """The neighbouring relation an event needs: replace-one for sampling without
    replacement, add/remove-one otherwise.

    Raises:
        ValueError: if the event mixes both.
    """
    found = _relations(event)
    if len(found) > 1:
        raise ValueError(
            "event mixes sampling without replacement (replace-one) with other "
            "mechanisms (add/remove-one); account them separately"
        )
    return (
        found.pop() if found else dp_accounting().NeighboringRelation.ADD_OR_REMOVE_ONE
    )


def _relations(event: DpEvent) -> set[Relation]:
    dp = dp_accounting()
    if isinstance(event, dp.SampledWithoutReplacementDpEvent):
        return {dp.NeighboringRelation.REPLACE_ONE}
    if isinstance(event, dp.SelfComposedDpEvent):
        return _relations(event.event)
    if isinstance(event, dp.ComposedDpEvent):
        return set().union(*(_relations(e) for e in event.events))
    if isinstance(event, dp.NoOpDpEvent):
        return set()
    return {dp.NeighboringRelation.ADD_OR_REMOVE_ONE}


def make_dp_accountant(kind: AccountantKind, relation: Relation) -> Any:
    """A fresh ``dp_accounting`` RDP or PLD accountant for ``relation``."""
    check_choice(kind, "accountant", ACCOUNTANT_KINDS)
    if kind == "rdp":
        from dp_accounting.rdp import RdpAccountant

        return RdpAccountant(neighboring_relation=relation)
    from dp_accounting.pld import PLDAccountant

    return PLDAccountant(neighboring_relation=relation)


def _check_supported(kind: str, dp_accountant: Any, event: DpEvent) -> None:
    if dp_accountant.supports(event):
        return
    hint = (
        "the PLD accountant of dp-accounting does not support sampling without "
        "replacement; use accountant='rdp', or Poisson client sampling"
        if kind == "pld"
        else "use a supported event (Poisson or fixed-size sampled Gaussian)"
    )
    raise UnsupportedAccountingError(
        f"accountant {kind!r} cannot compose {event!r}: {hint}"
    )


# -- budget and accountant ----------------------------------------------------


@dataclass(frozen=True)
class PrivacyBudget:
    """A target (ε, δ): ε > 0 finite, δ ∈ (0, 1).

    Raises:
        ValueError: naming the field that is out of range.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        check_positive(self.epsilon, "PrivacyBudget.epsilon")
        check_delta(self.delta, "PrivacyBudget.delta")


class PrivacyAccountant:
    """Composes DpEvents round after round and reports ε (a stateful component).

    The neighbouring relation is fixed by the first event composed (see
    :func:`neighboring_relation`); later events must need the same one.

    Args:
        kind: ``"rdp"`` (Mironov 2017, Rényi DP; supports both samplings) or
            ``"pld"`` (privacy loss distributions, tighter; Poisson only).
        delta: Default δ for :meth:`epsilon`.

    Raises:
        ValueError: for an unknown kind or δ outside (0, 1).
    """

    def __init__(self, kind: AccountantKind = "rdp", delta: float = 1e-5) -> None:
        check_choice(kind, "accountant", ACCOUNTANT_KINDS)
        self.kind: AccountantKind = kind
        self.delta = check_delta(delta)
        self._inner: Any = None
        self._relation: Relation | None = None
        self._ledger: list[tuple[DpEvent, int]] = []

    @property
    def ledger(self) -> tuple[tuple[DpEvent, int], ...]:
        """What was composed so far, as ``(event, count)`` pairs in order.

        Replaying it into a fresh accountant restores the state (resume).
        """
        return tuple(self._ledger)

    def _accountant_for(self, event: DpEvent) -> Any:
        relation = neighboring_relation(event)
        if self._relation is not None and relation != self._relation:
            raise ValueError(
                f"this accountant composes {self._relation.name} events; "
                f"{event!r} needs {relation.name}"
            )
        if self._inner is not None:
            return self._inner
        return make_dp_accountant(self.kind, relation)

    def compose(self, event: DpEvent, count: int = 1) -> None:
        """Add ``count`` runs of ``event`` to the ledger.

        Raises:
            UnsupportedAccountingError: if this kind cannot compose the event.
            ValueError: if ``count < 1`` or the event's neighbouring relation
                differs from the events composed before.
        """
        check_count(count, "count")
        inner = self._accountant_for(event)
        _check_supported(self.kind, inner, event)
        inner.compose(event, count)
        self._inner, self._relation = inner, neighboring_relation(event)
        self._ledger.append((event, count))

    def epsilon(self, delta: float | None = None) -> float:
        """ε spent so far at ``delta`` (default: the accountant's δ); 0 if empty."""
        d = self.delta if delta is None else check_delta(delta)
        if self._inner is None:
            return 0.0
        return float(self._inner.get_epsilon(d))

    def epsilon_if(
        self, event: DpEvent, count: int = 1, delta: float | None = None
    ) -> float:
        """ε after composing ``count`` more runs of ``event``, without composing."""
        check_count(count, "count")
        d = self.delta if delta is None else check_delta(delta)
        trial = copy.deepcopy(self._accountant_for(event))
        _check_supported(self.kind, trial, event)
        trial.compose(event, count)
        return float(trial.get_epsilon(d))

    def would_exceed(
        self, budget: PrivacyBudget, event: DpEvent, count: int = 1
    ) -> bool:
        """True if running ``event`` ``count`` more times would push ε at
        ``budget.delta`` above ``budget.epsilon``: stop BEFORE that round."""
        return self.epsilon_if(event, count, budget.delta) > budget.epsilon


# -- conveniences -------------------------------------------------------------


def epsilon_for(
    event: DpEvent, count: int, delta: float, accountant: AccountantKind = "rdp"
) -> float:
    """ε of ``count`` compositions of ``event`` at ``delta`` (fresh accountant)."""
    acc = PrivacyAccountant(accountant, delta)
    acc.compose(event, count)
    return acc.epsilon()


def epsilon_after(
    rounds: int,
    noise_multiplier: float,
    delta: float,
    sampling: Sampling,
    *,
    sample_rate: float | None = None,
    num_clients: int | None = None,
    clients_per_round: int | None = None,
    accountant: AccountantKind = "rdp",
) -> float:
    """Client-level ε after ``rounds`` rounds of DP-FedAvg (see
    :func:`client_level_event` for the arguments).

    Raises:
        ValueError: for invalid arguments; :class:`UnsupportedAccountingError`
            for PLD with fixed-size sampling.
    """
    check_count(rounds, "rounds")
    event = client_level_event(
        noise_multiplier,
        sampling,
        sample_rate=sample_rate,
        num_clients=num_clients,
        clients_per_round=clients_per_round,
    )
    return epsilon_for(event, rounds, delta, accountant)


def record_level_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: AccountantKind = "rdp",
) -> float:
    """Record-level ε of ``steps`` DP-SGD steps on one client's data (Abadi et
    al. 2016) with Poisson batches of rate q = expected batch size / n_k.

    Counts every step the client ran, over all rounds it took part in; no
    amplification from client sampling is claimed (the server sees the client's
    updates whenever it participates).
    """
    check_count(steps, "steps")
    return epsilon_for(
        record_level_event(noise_multiplier, sample_rate), steps, delta, accountant
    )
