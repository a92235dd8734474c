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
* :class:`DpAggregator`: DP-FedAvg (McMahan et al. 2018): clip to C, equal
  weights, Gaussian noise σC on the sum (central, by the server; or
  distributed, N(0, σ²C²/m) per client before a secure sum), divided by the
  public m̄; the result feeds ``strategy.step``. Each round composes one DP
  event in the accountant.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedpeft.aggregation import example_weights, weighted_mean
from fedpeft.privacy import clip_update, gaussian_noise_like
from fedpeft.privacy.dpfedavg import dp_mean, mean_from_noisy_sum, privatize_update
from fedpeft.privacy.noise import add_noise, central_noise_std
from fedpeft.secagg import SecAggConfig, secure_sum
from fedpeft.seeding import stream
from fedpeft.server.client_dp import ClientDP
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


@dataclass
class DpAggregator:
    """DP-FedAvg: the strategy steps by the clipped, noised, equal-weight mean.

    Attributes:
        dp: σ, C, m̄, the event and the accountant of the run.
        seed: Run seed of the reproducible noise (``secure_noise`` False).
        secure: The secure sum, when ``privacy.secagg`` is on (needed by
            distributed noise).
        secure_noise: Draw the noise from OS entropy.
    """

    dp: ClientDP
    seed: int
    secure: SecureSum | None = None
    secure_noise: bool = False
    releases_when_empty = True
    """A round without updates still releases noise / m̄ (and is accounted)."""
    clip: float = field(init=False)
    """This round's clip norm C (moves with adaptive clipping; checkpointed)."""

    def __post_init__(self) -> None:
        self.clip = self.dp.clip_norm

    @property
    def update_multiplier(self) -> float:
        """The update sum's noise multiplier: σ, or σ_Δ with adaptive clipping."""
        a = self.dp.adaptive
        return a.update_multiplier if a is not None else self.dp.noise_multiplier

    def merge(
        self,
        rnd: int,
        params: Params,
        updates: Sequence[ClientUpdate],
        strategy: Strategy,
    ) -> tuple[Params, Metrics]:
        dp, clip = self.dp, self.clip
        deltas = [u.delta for u in updates]
        norms = [clip_update(d, clip)[1] for d in deltas]
        if self.secure is None:  # central noise, added by the trusted server
            mean, _ = dp_mean(
                params,
                deltas,
                clip_norm=clip,
                noise_multiplier=self.update_multiplier,
                expected_clients=dp.expected_clients,
                rng=self._rng(rnd, 10**9),
                secure=self.secure_noise,
            )
            unclipped = float(sum(n <= clip for n in norms))
            stats: Metrics = {}
        else:
            mean, unclipped, stats = self._secure_mean(rnd, params, updates)
        new, metrics = strategy.step(rnd, params, mean)
        dp.accountant.compose(dp.event)
        out = {
            **agg_metrics(metrics),
            **stats,
            "dp_clipped_fraction": float(np.mean([n > clip for n in norms]))
            if norms
            else 0.0,
            "epsilon": dp.accountant.epsilon(dp.delta),
            "delta": dp.delta,
            "noise_multiplier": dp.noise_multiplier,
            "clip_norm": clip,
        }
        if dp.adaptive is not None:
            self.clip, noisy = dp.adaptive.next_clip(
                clip, unclipped, dp.expected_clients, self._rng(rnd, 10**9 + 1)
            )
            out.update(
                update_noise_multiplier=dp.adaptive.update_multiplier,
                dp_unclipped_fraction_noisy=noisy,
            )
        return new, out

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return {"clip_norm": np.array([self.clip], np.float64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if "clip_norm" in state:
            self.clip = float(np.asarray(state["clip_norm"]).reshape(-1)[0])

    def _secure_mean(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, float, Metrics]:
        """Clipped (and, distributed, noised by each client) updates summed
        securely; central noise is added to the sum by the server. With
        adaptive clipping each client's bit 1[‖Δ‖ ≤ C] rides in the same
        secure sum, so the server learns only the count."""
        assert self.secure is not None
        dp, clip = self.dp, self.clip
        self.secure.reset()
        shares = []
        for u in updates:
            if dp.mode == "distributed":
                share, norm = privatize_update(
                    u.delta,
                    clip_norm=clip,
                    noise_multiplier=dp.noise_multiplier,
                    num_clients=max(1, int(dp.expected_clients)),  # floor: more noise
                    rng=self._rng(rnd, u.client_id),
                    secure=self.secure_noise,
                )
            else:
                share, norm = clip_update(u.delta, clip)
            if dp.adaptive is not None:
                share[UNCLIPPED_KEY] = np.array([float(norm <= clip)], np.float32)
            shares.append(share)
        total = (
            self.secure(rnd, shares)
            if shares
            else {k: np.zeros_like(v) for k, v in params.items()}
        )
        unclipped = float(total.pop(UNCLIPPED_KEY, np.zeros(1))[0])
        if dp.mode == "central":
            std = central_noise_std(self.update_multiplier, clip)
            noise = gaussian_noise_like(
                total, std, self._rng(rnd, 10**9), self.secure_noise
            )
            total = add_noise(total, noise)
        mean = mean_from_noisy_sum(total, dp.expected_clients)
        return mean, unclipped, dict(self.secure.stats)

    def _rng(self, rnd: int, key: int) -> np.random.Generator | None:
        return None if self.secure_noise else stream(self.seed, "dp", rnd, key)

    def weighted_mean(
        self, rnd: int, arrays: Sequence[Params], num_examples: Sequence[int]
    ) -> tuple[Params, Metrics]:
        raise ValueError(
            "a warm start from the clients' raw data is outside the DP accounting; "
            "use peft.head_init = 'zeros' (or 'random') with privacy.client_dp"
        )

    def sum(
        self, rnd: int, arrays: Sequence[Params], clip_range: float = 0.0
    ) -> tuple[Params, Metrics]:
        return self.weighted_mean(rnd, arrays, [])

    def replay(self, rounds: int) -> None:
        if rounds > 0:
            self.dp.accountant.compose(self.dp.event, count=rounds)

    def budget_exhausted(self) -> bool:
        return self.dp.would_exceed()
