"""Aggregation under secure aggregation and/or client-level differential privacy.

Without privacy the strategy sees every client's update. With it, the server
only ever holds a *mean* (a secure sum divided by a public or securely summed
denominator, plus DP noise), which is handed to the strategy as one pseudo-update:
FedAvg/FedPrompt/FedProx then step by it and FedAdam/FedYogi use it as their
pseudo-gradient.

What the server learns, per round (docs/privacy.md):
* SecAgg, one pass (fedavg, fedprox, fedadam, fedyogi: weights n_k / n_total;
  fedprompt: weight 1): Σ w_k ΔP_k and Σ w_k, the survivors' ids.
* SecAgg + dynamic: pass 1 gives Σ ΔP_k and the count (the uniform mean, which
  is broadcast back); each client computes its own distance d_k and weight
  w_k = (n_k / n_total)·exp(−γ d_k / s)·exp(−β ℓ_k) locally; pass 2 gives
  Σ w_k ΔP_k and Σ w_k. With ``distance_scale = "mean"`` a 1-value secure sum
  of the d_k reveals their mean s (no individual d_k); ``"median"`` would need
  the individual distances and is refused.
* Client DP (DP-FedAvg): clipped updates, equal weights, Gaussian noise σ·C on
  the sum (central: added by the server; distributed: N(0, σ²C²/m) per client
  before the secure sum), divided by the public expected count m̄.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dp_accounting import DpEvent

from fedpeft.aggregation import flatten
from fedpeft.client.dp_local import RecordDP, dp_plan
from fedpeft.config import ConfigError, RunConfig
from fedpeft.seeding import stream
from fedpeft.privacy import (
    PrivacyAccountant,
    PrivacyBudget,
    check_strategy_compatible,
    client_level_event,
    clip_update,
    expected_clients,
    gaussian_noise_like,
)
from fedpeft.privacy.accounting import Sampling, record_level_epsilon
from fedpeft.privacy.calibration import (
    calibrate_noise_multiplier,
    calibrate_record_noise_multiplier,
)
from fedpeft.secagg import SecAggConfig, secure_sum
from fedpeft.strategies.sampling import sample_size
from fedpeft.types import ClientUpdate, Params

WEIGHT_KEY = "__weight__"
PROBE_RANGE = 64.0
"""Quantizer range of the probe round's (absolute, n_k/n-weighted) head values;
at b = 32 bits the resolution stays below 1e-6 for up to ~100 clients."""

logger = logging.getLogger(__name__)


@dataclass
class ClientDP:
    """Resolved client-level DP for a run: σ, the per-round event, the accountant."""

    clip_norm: float
    noise_multiplier: float
    mode: str
    expected_clients: float
    event: DpEvent
    accountant: PrivacyAccountant
    budget: PrivacyBudget | None
    delta: float

    def would_exceed(self) -> bool:
        return self.budget is not None and self.accountant.would_exceed(
            self.budget, self.event
        )


@dataclass
class PrivateAggregator:
    """Turns a round's client updates into the one mean the server may see."""

    cfg: RunConfig
    total_examples: int
    dp: ClientDP | None = None
    secagg: SecAggConfig | None = None
    last_stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: RunConfig, total_examples: int) -> PrivateAggregator | None:
        """The aggregator the config asks for, or None without SecAgg and DP.

        Raises:
            ConfigError: for a strategy or option the privacy analysis refuses.
        """
        p = cfg.privacy
        if not p.secagg and p.client_dp is None:
            return None
        if p.client_dp is not None:
            try:
                check_strategy_compatible(cfg.strategy.name)
            except ValueError as err:
                raise ConfigError(f"privacy.client_dp: {err}") from None
        if (
            p.secagg
            and cfg.strategy.name == "dynamic"
            and (cfg.strategy.distance_scale == "median")
        ):
            raise ConfigError(
                "strategy.distance_scale = 'median' needs every client's distance, "
                "which secure aggregation hides; use 'mean' or 'none' with "
                "privacy.secagg = true"
            )
        if p.client_dp is not None and cfg.peft.head_init == "probe":
            raise ConfigError(
                "peft.head_init = 'probe' fits the head on each client's raw data "
                "outside the DP accounting; use peft.head_init = 'zeros' (or 'random') "
                "with privacy.client_dp"
            )
        if (
            p.client_dp is not None
            and p.client_dp.mode == "distributed"
            and not p.secagg
        ):
            raise ConfigError(
                "privacy.client_dp.mode = 'distributed' adds only σ·C/√m noise per "
                "client and relies on secure aggregation to hide each share; set "
                "privacy.secagg = true or use mode = 'central'"
            )
        secagg = None
        if p.secagg:
            secagg = SecAggConfig(
                bits=p.secagg_bits,
                clip_range=p.secagg_clip_range,
                threshold=p.secagg_threshold,
                neighbours=p.secagg_neighbours,
                secure=p.secure,
            )
        return cls(cfg, total_examples, _client_dp(cfg), secagg)

    # ------------------------------------------------------------------ rounds
    def budget_exhausted(self) -> bool:
        """True when the next round would exceed the target (ε, δ)."""
        return self.dp is not None and self.dp.would_exceed()

    def replay(self, rounds: int) -> None:
        """Re-compose the privacy loss of ``rounds`` finished rounds (resume)."""
        if self.dp is not None and rounds > 0:
            self.dp.accountant.compose(self.dp.event, count=rounds)

    def aggregate(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[ClientUpdate, dict[str, Any]]:
        """The round's mean as one pseudo-update, and metrics (ε, bytes, times)."""
        self.last_stats = {}
        if self.dp is not None:
            mean = self._dp_mean(rnd, params, updates)
        elif self.cfg.strategy.name == "dynamic":
            mean = self._dynamic_mean(rnd, updates)
        else:
            weights = self._weights(updates)
            mean = self._weighted_mean(rnd, [u.delta for u in updates], weights, 0)
        metrics = dict(self.last_stats)
        if self.dp is not None:
            self.dp.accountant.compose(self.dp.event)
            metrics.update(
                epsilon=self.dp.accountant.epsilon(self.dp.delta),
                delta=self.dp.delta,
                noise_multiplier=self.dp.noise_multiplier,
            )
        # One pseudo-update: any strategy's weights over a single update are 1.
        # (Dynamic's quality factor was already applied client-side; its
        # val_loss here only satisfies the strategy's input check.)
        pseudo = ClientUpdate(-1, mean, max(len(updates), 1), {"val_loss": 0.0})
        return pseudo, metrics

    def weighted_mean(
        self, rnd: int, deltas: Sequence[Params], num_examples: Sequence[int]
    ) -> tuple[Params, dict[str, Any]]:
        """Example-weighted mean through the secure sum (the probe round's heads)."""
        self.last_stats = {}
        weights = [n / self.total_examples for n in num_examples]
        mean = self._weighted_mean(rnd, deltas, weights, 0, PROBE_RANGE)
        return mean, dict(self.last_stats)

    def _weights(self, updates: Sequence[ClientUpdate]) -> list[float]:
        if self.cfg.strategy.name == "fedprompt":
            return [1.0] * len(updates)
        # n_k / n_total keeps every weight in [0, 1], inside the quantizer's range.
        return [u.num_examples / self.total_examples for u in updates]

    # ---------------------------------------------------------- secure sums
    def _sum(
        self, rnd: int, vectors: Sequence[Params], step: int, clip_range: float = 0.0
    ) -> Params:
        """Σ vectors: through SecAgg when enabled (bytes/time recorded), else plain.

        ``clip_range`` widens the quantizer's [-r, r] for this sum (the probe
        round's heads are absolute values, not small deltas).
        """
        if self.secagg is None:
            return {k: np.sum([v[k] for v in vectors], axis=0) for k in vectors[0]}
        config = self.secagg
        if clip_range > config.clip_range:
            config = dataclasses.replace(config, clip_range=clip_range)
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
        rng = None if config.secure else stream(self.cfg.seed, "secagg", rnd, step)
        total, stats = secure_sum(list(vectors), config, rng=rng)
        sent = np.asarray(stats.sent_total(), float)
        received = np.asarray(stats.received_total(), float)
        acc = self.last_stats
        acc["secagg_bytes_up"] = acc.get("secagg_bytes_up", 0.0) + float(sent.sum())
        acc["secagg_bytes_down"] = acc.get("secagg_bytes_down", 0.0) + float(
            received.sum()
        )
        acc["secagg_client_seconds_mean"] = acc.get(
            "secagg_client_seconds_mean", 0.0
        ) + float(np.mean(stats.client_seconds))
        acc["secagg_server_seconds"] = (
            acc.get("secagg_server_seconds", 0.0) + stats.server_seconds
        )
        acc["secagg_passes"] = acc.get("secagg_passes", 0) + 1
        acc["secagg_error_bound"] = max(
            acc.get("secagg_error_bound", 0.0), stats.error_bound
        )
        return total

    def _weighted_mean(
        self,
        rnd: int,
        deltas: Sequence[Params],
        weights: Sequence[float],
        step: int,
        clip_range: float = 0.0,
    ) -> Params:
        """Σ w_k Δ_k / Σ w_k with both sums in one secure sum."""
        packed = [
            {
                **{k: (w * v).astype(np.float32) for k, v in d.items()},
                WEIGHT_KEY: np.array([w], np.float32),
            }
            for d, w in zip(deltas, weights, strict=True)
        ]
        total = self._sum(rnd, packed, step, clip_range)
        denom = float(total.pop(WEIGHT_KEY)[0])
        if denom <= 0:
            raise ValueError(f"round {rnd}: the securely summed weights are {denom}")
        return {k: (v / denom).astype(np.float32) for k, v in total.items()}

    def _dynamic_mean(self, rnd: int, updates: Sequence[ClientUpdate]) -> Params:
        """Two secure sums (module docstring): the mean, then the weighted mean."""
        s = self.cfg.strategy
        deltas = [u.delta for u in updates]
        mean = self._weighted_mean(rnd, deltas, [1.0] * len(deltas), 0)  # broadcast
        flat_mean = flatten(mean)
        distances = [float(np.linalg.norm(flatten(d) - flat_mean)) for d in deltas]
        scale = 1.0
        if s.distance_scale == "mean":  # a 1-value secure sum of the d_k
            total = self._sum(
                rnd, [{"d": np.array([d], np.float32)} for d in distances], 1
            )
            scale = float(total["d"][0]) / len(distances) or 1.0
        logw = [
            math.log(max(u.num_examples, 1) / self.total_examples)
            - s.gamma * d / scale
            - s.quality_beta * float(u.metrics.get("val_loss", 0.0))
            for u, d in zip(updates, distances, strict=True)
        ]
        # Clients cannot normalise by the max without revealing it; clamp instead:
        # weights underflow to ~0 only for clients far beyond the others.
        weights = [math.exp(max(lw, -60.0)) for lw in logw]
        self.last_stats["dynamic_distance_mean"] = float(np.mean(distances))
        return self._weighted_mean(rnd, deltas, weights, 2)

    # ------------------------------------------------------------------- DP
    def _dp_mean(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> Params:
        """DP-FedAvg: clip, noise (central or distributed), sum, divide by m̄."""
        dp = self.dp
        assert dp is not None
        secure = self.cfg.privacy.secure
        clipped, norms = [], []
        for u in updates:
            c, norm = clip_update(u.delta, dp.clip_norm)
            norms.append(norm)
            if dp.mode == "distributed":
                rng = None if secure else stream(self.cfg.seed, "dp", rnd, u.client_id)
                std = (
                    dp.noise_multiplier * dp.clip_norm / math.sqrt(dp.expected_clients)
                )
                noise = gaussian_noise_like(c, std, rng, secure=secure)
                c = {k: (c[k] + noise[k]).astype(np.float32) for k in c}
            clipped.append(c)
        zero = {k: np.zeros_like(v) for k, v in params.items()}
        total = self._sum(rnd, clipped, 0) if clipped else zero
        if dp.mode == "central":
            rng = None if secure else stream(self.cfg.seed, "dp", rnd, 10**9)
            std = dp.noise_multiplier * dp.clip_norm
            noise = gaussian_noise_like(total, std, rng, secure=secure)
            total = {k: (total[k] + noise[k]).astype(np.float32) for k in total}
        self.last_stats["dp_clipped_fraction"] = (
            float(np.mean([n > dp.clip_norm for n in norms])) if norms else 0.0
        )
        return {
            k: (v / dp.expected_clients).astype(np.float32) for k, v in total.items()
        }


def _client_dp(cfg: RunConfig) -> ClientDP | None:
    c = cfg.privacy.client_dp
    if c is None:
        return None
    fed, strat = cfg.federation, cfg.strategy
    sampling: Sampling = fed.sampling
    m = sample_size(fed.num_clients, strat.fraction_fit, strat.min_fit_clients)
    kwargs: dict[str, Any] = (
        {"sample_rate": strat.fraction_fit}
        if sampling == "poisson"
        else {"num_clients": fed.num_clients, "clients_per_round": m}
    )
    if c.noise_multiplier is not None:
        sigma = c.noise_multiplier
    elif c.target_epsilon is not None:
        sigma = calibrate_noise_multiplier(
            c.target_epsilon,
            c.delta,
            max(fed.rounds, 1),
            sampling,
            accountant=c.accountant,
            **kwargs,
        )
    else:
        raise ConfigError(
            "privacy.client_dp needs noise_multiplier or target_epsilon "
            "(e.g. --set 'privacy.client_dp={target_epsilon=8.0}')"
        )
    event = client_level_event(sigma, sampling, **kwargs)
    denom = expected_clients(
        sampling,
        num_clients=fed.num_clients,
        clients_per_round=m,
        sample_rate=strat.fraction_fit,
    )
    budget = (
        PrivacyBudget(c.target_epsilon, c.delta)
        if c.target_epsilon is not None
        else None
    )
    return ClientDP(
        c.clip_norm,
        sigma,
        c.mode,
        denom,
        event,
        PrivacyAccountant(c.accountant, c.delta),
        budget,
        c.delta,
    )


@dataclass
class RecordDPLedger:
    """Record-level DP-SGD of a run: σ, and every client's ε so far.

    A client's ε counts all DP-SGD steps it ran over the rounds it took part in
    (q_k = batch / n_k); no amplification by client sampling is claimed.
    """

    dp: RecordDP
    cfg: RunConfig
    steps: dict[int, int] = field(default_factory=dict)
    epsilons: dict[int, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls, cfg: RunConfig, client_sizes: Sequence[int]
    ) -> RecordDPLedger | None:
        """σ as configured, or the largest σ any client needs to stay within the
        target if it took part in every round (never overshoots).

        Raises:
            ConfigError: for settings outside the DP-SGD analysis.
        """
        r = cfg.privacy.record_dp
        if r is None:
            return None
        if cfg.peft.method != "prompt":
            raise ConfigError(
                "privacy.record_dp supports peft.method = 'prompt' "
                f"(per-example gradients), not {cfg.peft.method!r}"
            )
        if cfg.strategy.name == "fedprox":
            raise ConfigError(
                "privacy.record_dp: FedProx's proximal term is outside "
                "the DP-SGD analysis; choose another strategy"
            )
        if r.noise_multiplier is not None:
            sigma = r.noise_multiplier
        elif r.target_epsilon is not None:
            plans = {dp_plan(n, cfg.client) for n in client_sizes}
            sigma = max(
                calibrate_record_noise_multiplier(
                    r.target_epsilon,
                    r.delta,
                    q,
                    steps * max(cfg.federation.rounds, 1),
                    r.accountant,
                )
                for q, steps in plans
            )
        else:
            raise ConfigError(
                "privacy.record_dp needs noise_multiplier or target_epsilon"
            )
        dp = RecordDP(r.clip_norm, sigma, r.delta, r.accountant, cfg.privacy.secure)
        return cls(dp, cfg)

    def participate(self, client: int, num_examples: int) -> None:
        """Account one round of DP-SGD by ``client`` (n_k examples)."""
        q, steps = dp_plan(num_examples, self.cfg.client)
        self.steps[client] = self.steps.get(client, 0) + steps
        self.epsilons[client] = record_level_epsilon(
            self.dp.noise_multiplier,
            q,
            self.steps[client],
            self.dp.delta,
            self.dp.accountant,  # type: ignore[arg-type]
        )

    def metrics(self) -> dict[str, float]:
        if not self.epsilons:
            return {}
        return {
            "record_epsilon_max": max(self.epsilons.values()),
            "record_noise_multiplier": self.dp.noise_multiplier,
            "record_delta": self.dp.delta,
        }
