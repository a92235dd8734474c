"""The strategy contract, its registration and construction, and helpers shared
by strategies.

A strategy is a small object over plain arrays (never torch, never Flower
records): it tells clients which extra local-training settings to use and turns
the round's client updates into new global parameters. Its options class
(:mod:`fedpeft.strategies.config`) sits beside it in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from fedpeft.aggregation import global_norm
from fedpeft.registry import ConfigError
from fedpeft.strategies.config import STRATEGIES, StrategyFactory, StrategyOptions
from fedpeft.types import (
    ClientUpdate,
    Float64Array,
    Params,
    ParamsLike,
    check_params_like,
)

SumFn = Callable[[Sequence[Params]], Params]
"""A sum of per-client arrays that the server may see: plain, or a secure sum
whose individual terms stay hidden (:mod:`fedpeft.secagg`)."""

DpRole = Literal["uniform_mean", "server_optimizer"]
"""How a strategy may run under client-level DP
(:mod:`fedpeft.privacy.compatibility`)."""


@dataclass(frozen=True)
class RoundStats:
    """What every client may know when it computes its own aggregation weight
    under secure aggregation: public counts and securely summed statistics.

    Attributes:
        total_examples: Σ n_k over all clients of the federation (public).
        mean_delta: The uniform mean of the round's deltas (Dynamic's first
            secure pass), broadcast back to the clients; ``None`` if unused.
        distance_scale: The public divisor of Dynamic's distances.
    """

    total_examples: int
    mean_delta: Params | None = None
    distance_scale: float = 1.0


@runtime_checkable
class Strategy(Protocol):
    """What the round loop needs from a server-side aggregation strategy.

    The merge is split in two so that any way of computing a weighted mean
    (plain, secure sum, clipped and noised) serves every strategy:

    * :meth:`weights` — the normalised client weights when the server sees
      every update; :meth:`client_weight` — one client's unnormalised weight
      from its own update and the public :class:`RoundStats`, for secure
      aggregation, where the server only sees sums;
    * :meth:`step` — the server update from the round's weighted mean delta.

    :meth:`aggregate` composes them for the plain case.
    """

    name: str
    needs_mean: bool
    """Its weights depend on the round's mean delta (a second secure pass)."""
    dp_role: DpRole | None
    """Its role under client-level DP, or ``None`` when the analysis refuses it."""
    dp_refusal: str
    """Why client-level DP refuses it (when ``dp_role`` is ``None``)."""

    def client_config(self, server_round: int) -> dict[str, float]:
        """Extra local-training settings for this round, e.g. ``proximal_mu``."""
        ...

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        """Normalised aggregation weights of the round's updates (sum to 1)."""
        ...

    def round_stats(
        self, updates: Sequence[ClientUpdate], total_examples: int, secure_sum: SumFn
    ) -> RoundStats:
        """The public statistics :meth:`client_weight` needs, computed through
        ``secure_sum`` only (the server never sees one client's update)."""
        ...

    def client_weight(self, update: ClientUpdate, stats: RoundStats) -> float:
        """Client k's unnormalised weight, computable by client k alone."""
        ...

    def check_secure(self) -> None:
        """Raise ``ValueError`` for settings secure aggregation cannot compute."""
        ...

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        """New global parameters from the round's weighted mean delta."""
        ...

    def aggregate(
        self,
        server_round: int,
        global_params: Params,
        updates: Sequence[ClientUpdate],
    ) -> tuple[Params, dict[str, float]]:
        """New global parameters (inputs untouched) and scalar metrics to log."""
        ...

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Server-side state to checkpoint; ``{}`` for a stateless strategy."""
        ...

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


def validate_updates(
    server_round: int, global_params: ParamsLike, updates: Sequence[ClientUpdate]
) -> None:
    """Check a round's updates before any aggregation.

    Raises:
        ValueError: if there are no updates, a client id repeats, an example count
            is negative, or a delta's keys/shapes differ from ``global_params`` or
            hold NaN/inf (the message names the client id).
    """
    if len(updates) == 0:
        raise ValueError(f"round {server_round}: no client updates to aggregate")
    check_params_like(global_params, global_params, what="global params")
    seen: set[int] = set()
    for update in updates:
        who = f"update from client {update.client_id}"
        if update.client_id in seen:
            raise ValueError(
                f"round {server_round}: client {update.client_id} "
                "sent more than one update"
            )
        seen.add(update.client_id)
        if update.num_examples < 0:
            raise ValueError(
                f"{who} has num_examples={update.num_examples}; it must be >= 0"
            )
        check_params_like(global_params, update.delta, what=who)


def weight_metrics(weights: np.ndarray[Any, Any], step: ParamsLike) -> dict[str, float]:
    """Scalar metrics common to weighted-mean strategies.

    Returns:
        ``num_clients``, ``weight_max``, ``weight_min`` (of the normalised weights),
        ``effective_clients`` (``1/Σw²``, K for uniform weights) and ``step_norm``
        (L2 norm of the change applied to the global parameters).
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return {
        "num_clients": float(w.size),
        "weight_max": float(w.max()),
        "weight_min": float(w.min()),
        "effective_clients": float(1.0 / np.sum(w * w)),
        "step_norm": global_norm(step),
    }


def check_empty_state(name: str, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """``load_state_dict`` of a stateless strategy: accept only ``{}``.

    Raises:
        ValueError: if ``state`` has entries (it came from another strategy).
    """
    if len(state) > 0:
        raise ValueError(
            f"strategy {name!r} is stateless but got state keys {sorted(state)}; "
            "was the checkpoint written by another strategy?"
        )


S = TypeVar("S", bound=StrategyFactory)


def register_strategy(name: str, options: type[StrategyOptions]) -> Callable[[S], S]:
    """Class decorator: register a strategy class and its options class under
    ``name`` in :data:`STRATEGIES`, with the class docstring's first line as help.

    Raises:
        ValueError: if ``name`` is taken or ``options.name`` does not default to it.
    """

    def decorator(cls: S) -> S:
        lines = (cls.__doc__ or "").strip().splitlines()
        STRATEGIES.add_component(name, options, cls, lines[0] if lines else "")
        return cls

    return decorator


def build_strategy(
    config: StrategyOptions | str | None = None, /, **options: Any
) -> Strategy:
    """Build a registered strategy from its validated options.

    The strategy is called with exactly the options its options class declares
    (:meth:`StrategyOptions.strategy_options`); an option of another strategy
    is refused, never dropped.

    Args:
        config: The strategy's options (e.g. ``cfg.strategy``), or the name of
            a registered strategy (``None``: the default, ``"fedavg"``).
        **options: Options to set, on top of ``config`` when it is an options
            object, e.g. ``build_strategy("fedprox", proximal_mu=0.1)``.

    Raises:
        ConfigError: for an unknown name (with the closest registered one), an
            option of another strategy (naming the strategies that have it) or
            a value out of range.
        TypeError: if the registered factory does not build a :class:`Strategy`.
    """
    if isinstance(config, StrategyOptions):
        spec = STRATEGIES.create(config.name, **{**config.model_dump(), **options})
    else:
        spec = STRATEGIES.create(config, **options)
    strategy = STRATEGIES.factory(spec.name)(**spec.strategy_options())
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy {spec.name!r} does not implement the Strategy protocol"
        )
    if spec.server_momentum > 0:
        from fedpeft.strategies.momentum import ServerMomentum

        try:
            return ServerMomentum(strategy, spec.server_momentum)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return strategy
