"""How the round's mean of client updates is computed: in the clear, as a
secure sum, or clipped and noised (DP-FedAvg).

Every aggregator merges with the same strategy contract
(:class:`~fedpeft.strategies.Strategy`): the strategy says how much each client
weighs and how the server steps by the weighted mean; the aggregator decides
what the server gets to see while that mean is computed.

* :class:`PlainAggregator`: the server sees every update; ``strategy.aggregate``.
* :class:`SecureAggregator`: the server sees only sums (Bonawitz et al. 2017):
  each client computes its own weight w_k from public statistics
  (``strategy.round_stats``, themselves secure sums), then one secure sum of
  ``(w_k ΔP_k, w_k)`` gives the weighted mean.
* :class:`~fedpeft.server.dp_aggregator.DpAggregator`: DP-FedAvg, clipped
  and noised (its own module).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedpeft.aggregation import example_weights, weighted_mean
from fedpeft.privacy import clip_update
from fedpeft.secagg import SecAggConfig, secure_sum
from fedpeft.seeding import stream
from fedpeft.strategies import Strategy
from fedpeft.types import ClientUpdate, Params

logger = logging.getLogger(__name__)

WEIGHT_KEY = "__weight__"
UNCLIPPED_KEY = "__unclipped__"
"""The adaptive-clipping bit that rides in a DP round's secure sum."""
PROBE_RANGE = 64.0
"""Quantizer range of the warm start's (absolute, n_k/n-weighted) head values;
at b = 32 bits the resolution stays below 1e-6 for up to ~100 clients."""

SUM_BITS = 62
"""Modulus bits of :meth:`SecureAggregator.sum` (the largest the protocol allows)."""

Metrics = dict[str, Any]


def agg_metrics(metrics: dict[str, float]) -> Metrics:
    """A strategy's merge metrics as round-record keys (``agg_`` prefix)."""
    return {f"agg_{k}": v for k, v in metrics.items()}


def plain_sum(arrays: Sequence[Params]) -> Params:
    """Σ arrays key by key (float64 accumulation, float32 result).

    Raises:
        ValueError: if there is nothing to sum or the keys differ.
    """
    if not arrays:
        raise ValueError("nothing to sum")
    keys = set(arrays[0])
    for a in arrays[1:]:
        if set(a) != keys:
            raise ValueError(f"arrays to sum have keys {sorted(a)} and {sorted(keys)}")
    return {
        k: np.sum([np.asarray(a[k], np.float64) for a in arrays], axis=0).astype(
            np.float32
        )
        for k in arrays[0]
    }


class Aggregator(Protocol):
    """Turns a round's validated updates into new global parameters."""

    releases_when_empty: bool
    """Whether a round with no valid update still merges (DP releases noise)."""

    @property
    def secure(self) -> SecureSum | None:
        """The secure sum the server's merges must go through, if any."""
        ...

    def merge(
        self,
        rnd: int,
        params: Params,
        updates: Sequence[ClientUpdate],
        strategy: Strategy,
    ) -> tuple[Params, Metrics]:
        """New global parameters and the round's aggregation metrics."""
        ...

    def weighted_mean(
        self, rnd: int, arrays: Sequence[Params], num_examples: Sequence[int]
    ) -> tuple[Params, Metrics]:
        """The n_k-weighted mean of absolute arrays (the warm start's heads)."""
        ...

    def sum(
        self, rnd: int, arrays: Sequence[Params], clip_range: float = 0.0
    ) -> tuple[Params, Metrics]:
        """Σ arrays (the exact warm start's class statistics); ``clip_range``
        widens a secure sum's quantizer range."""
        ...

    def replay(self, rounds: int) -> None:
        """Re-compose the privacy loss of ``rounds`` finished rounds (resume)."""
        ...

    def budget_exhausted(self) -> bool:
        """True when one more round would exceed the privacy budget."""
        ...

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """What a checkpoint must keep (adaptive clipping's C); ``{}`` if none."""
        ...

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class _Stateless:
    """The checkpoint methods of an aggregator without state."""

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        del state


class PlainAggregator(_Stateless):
    """The server sees every update: the strategy merges them itself."""

    releases_when_empty = False
    secure: SecureSum | None = None

    def merge(
        self,
        rnd: int,
        params: Params,
        updates: Sequence[ClientUpdate],
        strategy: Strategy,
    ) -> tuple[Params, Metrics]:
        new, metrics = strategy.aggregate(rnd, params, updates)
        return new, agg_metrics(metrics)

    def weighted_mean(
        self, rnd: int, arrays: Sequence[Params], num_examples: Sequence[int]
    ) -> tuple[Params, Metrics]:
        return weighted_mean(arrays, example_weights(num_examples)), {}

    def sum(
        self, rnd: int, arrays: Sequence[Params], clip_range: float = 0.0
    ) -> tuple[Params, Metrics]:
        return plain_sum(arrays), {}

    def replay(self, rounds: int) -> None:
        """Nothing to re-account."""

    def budget_exhausted(self) -> bool:
        return False


@dataclass
class SecureSum:
    """Σ of per-client arrays through the in-process SecAgg protocol, with its
    bytes and times added to :attr:`stats` (one entry per round).

    Attributes:
        config: The protocol's parameters.
        seed: Run seed of the INSECURE reproducible mode (``config.secure``
            False); ignored in secure mode, which draws from OS entropy.
        total_examples: Σ n_k over the federation (public).
    """

    config: SecAggConfig
    seed: int
    stats: Metrics = field(default_factory=dict)
    _passes: int = 0

    def reset(self) -> None:
        self.stats, self._passes = {}, 0

    def widened(self, clip_range: float = 0.0, bits: int = 0) -> SecAggConfig:
        """The config of one sum: the quantizer range raised to ``clip_range``
        and the modulus to ``bits`` where they are larger."""
        config = self.config
        if clip_range > config.clip_range:
            config = dataclasses.replace(config, clip_range=clip_range)
        if bits > config.bits:
            config = dataclasses.replace(config, bits=bits, value_bits=None)
        return config

    def __call__(
        self,
        rnd: int,
        vectors: Sequence[Params],
        clip_range: float = 0.0,
        bits: int = 0,
    ) -> Params:
        """Σ vectors; ``clip_range`` widens the quantizer's [-r, r] and
        ``bits`` raises the modulus' bits for this sum (the warm starts'
        heads and class statistics are absolute values, not small deltas)."""
        config = self.widened(clip_range, bits)
        for v in vectors:  # each client checks its own vector
            peak = max(float(np.abs(a).max()) for a in v.values())
            if peak > config.clip_range:
                logger.warning(
                    "round %d: a client's value %.3g exceeds the secure-aggregation "
                    "range ±%g and is clipped; raise privacy.secagg_clip_range",
                    rnd,
                    peak,
                    config.clip_range,
                )
        rng = None if config.secure else stream(self.seed, "secagg", rnd, self._passes)
        total, stats = secure_sum(list(vectors), config, rng=rng)
        self._passes += 1
        acc = self.stats
        for key, value in (
            ("secagg_bytes_up", float(np.sum(stats.sent_total()))),
            ("secagg_bytes_down", float(np.sum(stats.received_total()))),
            ("secagg_client_seconds_mean", float(np.mean(stats.client_seconds))),
            ("secagg_server_seconds", stats.server_seconds),
            ("secagg_passes", 1),
        ):
            acc[key] = acc.get(key, 0.0) + value
        acc["secagg_error_bound"] = max(
            acc.get("secagg_error_bound", 0.0), stats.error_bound
        )
        return total

    def weighted_mean(
        self,
        rnd: int,
        arrays: Sequence[Params],
        weights: Sequence[float],
        clip_range: float = 0.0,
    ) -> Params:
        """Σ w_k x_k / Σ w_k with both sums in one secure sum."""
        packed = [
            {
                **{k: (w * v).astype(np.float32) for k, v in x.items()},
                WEIGHT_KEY: np.array([w], np.float32),
            }
            for x, w in zip(arrays, weights, strict=True)
        ]
        total = self(rnd, packed, clip_range)
        denom = float(total.pop(WEIGHT_KEY)[0])
        if denom <= 0:
            raise ValueError(f"round {rnd}: the securely summed weights are {denom}")
        return {k: (v / denom).astype(np.float32) for k, v in total.items()}


@dataclass
class SecureAggregator(_Stateless):
    """The server sees only secure sums; weights are computed by the clients."""

    releases_when_empty = False

    secure: SecureSum
    total_examples: int
    client_bound: float = 0.0
    """L2 bound each client applies to its own update before masking
    (``robust.rule = 'norm-bound'`` with ``robust.max_norm``; 0 = none)."""

    def merge(
        self,
        rnd: int,
        params: Params,
        updates: Sequence[ClientUpdate],
        strategy: Strategy,
    ) -> tuple[Params, Metrics]:
        self.secure.reset()
        if self.client_bound > 0:  # in each client, before its vector is masked
            updates = [
                dataclasses.replace(u, delta=clip_update(u.delta, self.client_bound)[0])
                for u in updates
            ]
        stats = strategy.round_stats(
            updates, self.total_examples, lambda vs: self.secure(rnd, vs)
        )
        weights = [strategy.client_weight(u, stats) for u in updates]
        mean = self.secure.weighted_mean(rnd, [u.delta for u in updates], weights)
        new, metrics = strategy.step(rnd, params, mean)
        return new, {**agg_metrics(metrics), **self.secure.stats}

    def weighted_mean(
        self, rnd: int, arrays: Sequence[Params], num_examples: Sequence[int]
    ) -> tuple[Params, Metrics]:
        self.secure.reset()
        weights = [n / self.total_examples for n in num_examples]
        mean = self.secure.weighted_mean(rnd, arrays, weights, PROBE_RANGE)
        return mean, dict(self.secure.stats)

    def sum(
        self, rnd: int, arrays: Sequence[Params], clip_range: float = 0.0
    ) -> tuple[Params, Metrics]:
        """One secure sum at :data:`SUM_BITS` bits: the class-means head
        divides the summed statistics by small counts and variances, which
        magnify the quantizer's error (at 32 bits a tiny run's head moved by
        4e-2)."""
        if not arrays:
            raise ValueError(f"round {rnd}: nothing to sum securely")
        self.secure.reset()
        total = self.secure(rnd, arrays, clip_range, SUM_BITS)
        return total, dict(self.secure.stats)

    def replay(self, rounds: int) -> None:
        """Nothing to re-account."""

    def budget_exhausted(self) -> bool:
        return False
