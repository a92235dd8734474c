"""Record-level DP-SGD of a run: σ, and every client's ε so far."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpeft.client.dp_local import RecordDP, dp_plan
from fedpeft.config import ConfigError, RunConfig
from fedpeft.privacy.accounting import record_level_epsilon
from fedpeft.privacy.calibration import calibrate_record_noise_multiplier
from fedpeft.strategies import Strategy


@dataclass
class RecordDPLedger:
    """Record-level DP-SGD of a run: σ, and every client's ε so far.

    A client's ε counts all DP-SGD steps it ran over the rounds it took part in
    (q_k = batch / n_k); no amplification by client sampling is claimed.
    """

    dp: RecordDP
    cfg: RunConfig
    client_sizes: Sequence[int]
    steps: dict[int, int] = field(default_factory=dict)
    epsilons: dict[int, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls, cfg: RunConfig, client_sizes: Sequence[int], strategy: Strategy
    ) -> RecordDPLedger | None:
        """σ as configured, or the largest σ any client needs to stay within the
        target if it took part in every round (never overshoots).

        Raises:
            ConfigError: for settings outside the DP-SGD analysis.
        """
        r = cfg.privacy.record_dp
        if r is None:
            return None
        if strategy.client_config(1).get("proximal_mu", 0.0) > 0:
            raise ConfigError(
                f"privacy.record_dp: the proximal term of strategy "
                f"{strategy.name!r} is outside the DP-SGD analysis; choose "
                "another strategy (or strategy.proximal_mu = 0)"
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
        return cls(dp, cfg, client_sizes)

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

    def replay(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Re-account the DP-SGD steps of finished rounds (resume): every
        client of a record that sent a valid update took part."""
        for record in history:
            if record.get("round", 0) < 1:
                continue
            for k in record.get("accepted_clients", []):
                self.participate(int(k), self.client_sizes[int(k)])

    def metrics(self) -> dict[str, float]:
        if not self.epsilons:
            return {}
        return {
            "record_epsilon_max": max(self.epsilons.values()),
            "record_noise_multiplier": self.dp.noise_multiplier,
            "record_delta": self.dp.delta,
        }
