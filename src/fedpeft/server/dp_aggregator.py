"""DP-FedAvg as an aggregator (McMahan et al. 2018): clip each update to C,
weigh clients equally, add Gaussian noise σC to the sum (central, by the
server; or distributed, N(0, σ²C²/m) per client before a secure sum), divide
by the public m̄, and step with the strategy. Each round composes one DP event
in the accountant (:class:`~fedpeft.server.client_dp.ClientDP`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpeft.privacy import clip_update, gaussian_noise_like
from fedpeft.privacy.dpfedavg import dp_mean, mean_from_noisy_sum, privatize_update
from fedpeft.privacy.noise import add_noise, central_noise_std
from fedpeft.seeding import stream
from fedpeft.server.aggregators import UNCLIPPED_KEY, Metrics, SecureSum, agg_metrics
from fedpeft.server.client_dp import ClientDP
from fedpeft.strategies import Strategy
from fedpeft.types import ClientUpdate, Params

logger = logging.getLogger(__name__)


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
