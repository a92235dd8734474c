"""Frozen, validated settings for client-level and record-level DP.

Plain dataclasses (no pydantic), validated on construction: a bad value raises
``ValueError`` naming the field, the value and what is allowed. Exactly one of
``noise_multiplier`` (σ given) and ``target_epsilon`` (σ calibrated from the run
length and sampling) is set. Both round-trip through :meth:`as_dict` /
``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from fedpeft.privacy.accounting import (
    ACCOUNTANT_KINDS,
    AccountantKind,
    Sampling,
    check_choice,
    check_delta,
    check_positive,
)
from fedpeft.privacy.calibration import (
    calibrate_noise_multiplier,
    calibrate_record_noise_multiplier,
)

Mode = Literal["central", "distributed"]
MODES: tuple[str, ...] = get_args(Mode)

_C = TypeVar("_C", "ClientDPConfig", "RecordDPConfig")


def _check_sigma_or_target(
    owner: str, sigma: float | None, target: float | None
) -> None:
    if (sigma is None) == (target is None):
        raise ValueError(
            f"{owner}: set exactly one of noise_multiplier (got {sigma!r}) and "
            f"target_epsilon (got {target!r})"
        )
    if sigma is not None and not (
        isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0
    ):
        raise ValueError(
            f"{owner}.noise_multiplier must be a finite number > 0, got {sigma!r}"
        )
    if target is not None:
        check_positive(target, f"{owner}.target_epsilon")


def _common_checks(cfg: ClientDPConfig | RecordDPConfig) -> None:
    owner = type(cfg).__name__
    _check_sigma_or_target(owner, cfg.noise_multiplier, cfg.target_epsilon)
    check_positive(cfg.clip_norm, f"{owner}.clip_norm")
    check_delta(cfg.delta, f"{owner}.delta")
    check_choice(cfg.accountant, f"{owner}.accountant", ACCOUNTANT_KINDS)
    if not isinstance(cfg.secure_noise, bool):
        raise ValueError(
            f"{owner}.secure_noise must be a bool, got {cfg.secure_noise!r}"
        )


def _target(cfg: ClientDPConfig | RecordDPConfig) -> float:
    if cfg.target_epsilon is None:  # excluded by __post_init__ when σ is None
        raise ValueError(f"{type(cfg).__name__}: neither noise_multiplier nor target")
    return float(cfg.target_epsilon)


def _from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} got unknown keys {unknown}; allowed: {sorted(names)}"
        )
    return cls(**dict(data))


@dataclass(frozen=True)
class ClientDPConfig:
    """Client-level DP-FedAvg (McMahan et al. 2018).

    Attributes:
        clip_norm: C > 0, bound on each client's update norm.
        delta: δ ∈ (0, 1); choose it below 1/N for N clients.
        noise_multiplier: σ > 0 (noise std σ·C on the sum), or ``None``.
        target_epsilon: ε > 0 to calibrate σ for, or ``None``.
        mode: ``"central"`` (server adds N(0, σ²C²)) or ``"distributed"`` (each of
            m clients adds N(0, σ²C²/m) under secure aggregation).
        accountant: ``"rdp"`` or ``"pld"`` (PLD: Poisson client sampling only).
        secure_noise: Draw the noise from OS entropy instead of the run seed.
    """

    clip_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    mode: Mode = "central"
    accountant: AccountantKind = "rdp"
    secure_noise: bool = False

    def __post_init__(self) -> None:
        _common_checks(self)
        check_choice(self.mode, "ClientDPConfig.mode", MODES)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientDPConfig:
        """Build from a mapping; unknown keys are refused (named)."""
        return _from_dict(cls, data)

    def resolve_noise_multiplier(
        self,
        rounds: int,
        sampling: Sampling,
        *,
        sample_rate: float | None = None,
        num_clients: int | None = None,
        clients_per_round: int | None = None,
    ) -> float:
        """σ as configured, or calibrated so ``rounds`` rounds stay within
        ``target_epsilon`` at ``delta`` (never overshooting)."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        return calibrate_noise_multiplier(
            _target(self),
            self.delta,
            rounds,
            sampling,
            sample_rate=sample_rate,
            num_clients=num_clients,
            clients_per_round=clients_per_round,
            accountant=self.accountant,
        )


@dataclass(frozen=True)
class RecordDPConfig:
    """Record-level DP-SGD inside each client (Abadi et al. 2016).

    Attributes:
        clip_norm: Per-example gradient bound C > 0.
        delta: δ ∈ (0, 1); choose it below 1/n_k for a client with n_k records.
        noise_multiplier: σ > 0, or ``None``.
        target_epsilon: ε > 0 per client over the whole run, or ``None``.
        accountant: ``"rdp"`` or ``"pld"``.
        secure_noise: Draw the noise from OS entropy instead of the run seed.
    """

    clip_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    accountant: AccountantKind = "rdp"
    secure_noise: bool = False

    def __post_init__(self) -> None:
        _common_checks(self)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordDPConfig:
        """Build from a mapping; unknown keys are refused (named)."""
        return _from_dict(cls, data)

    def resolve_noise_multiplier(self, sample_rate: float, steps: int) -> float:
        """σ as configured, or calibrated for ``steps`` Poisson-sampled steps at
        rate q = expected batch / n_k (calibrate with the smallest client, or per
        client)."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        return calibrate_record_noise_multiplier(
            _target(self), self.delta, sample_rate, steps, self.accountant
        )
