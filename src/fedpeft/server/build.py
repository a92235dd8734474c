"""The server's pieces from a run configuration: the strategy and the way its
mean is computed (plain, secure, differentially private)."""

from __future__ import annotations

from collections.abc import Callable

from fedpeft.config import ConfigError, RunConfig
from fedpeft.privacy import check_strategy_compatible
from fedpeft.secagg import SecAggConfig
from fedpeft.server.aggregators import (
    Aggregator,
    PlainAggregator,
    SecureAggregator,
    SecureSum,
)
from fedpeft.server.client_dp import client_dp_plan
from fedpeft.server.dp_aggregator import DpAggregator
from fedpeft.server.robust import RobustAggregator
from fedpeft.strategies import Strategy, build_strategy


def strategy_from_config(cfg: RunConfig) -> Strategy:
    """The strategy ``cfg.strategy.name`` names, built from its own options."""
    return build_strategy(cfg.strategy)


SecureSumFactory = Callable[[SecAggConfig, int], SecureSum]
"""Builds the secure sum from its config and the run seed (in process by
default; a remote runtime passes its own, :mod:`fedpeft.remote.secure_sum`)."""


def build_aggregator(
    cfg: RunConfig,
    strategy: Strategy,
    total_examples: int,
    secure_sum: SecureSumFactory = SecureSum,
) -> Aggregator:
    """How the round's mean is computed under ``cfg.privacy``.

    Raises:
        ConfigError: for a strategy or setting the privacy analysis or the
            secure sum cannot serve, naming the setting to change.
    """
    p = cfg.privacy
    secure = None
    if p.secagg:
        try:
            strategy.check_secure()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        config = SecAggConfig(
            bits=p.secagg_bits,
            clip_range=p.secagg_clip_range,
            threshold=p.secagg_threshold,
            neighbours=p.secagg_neighbours,
            secure=p.secure,
        )
        secure = secure_sum(config, cfg.seed)
    dp = client_dp_plan(cfg)
    if dp is None:
        robust = cfg.robust  # the config refused the rules secure sums cannot serve
        if secure is not None:
            bound = robust.max_norm if robust.rule == "norm-bound" else 0.0
            return SecureAggregator(secure, total_examples, client_bound=bound)
        if robust.rule == "mean":
            return PlainAggregator()
        return RobustAggregator(robust)
    try:
        check_strategy_compatible(strategy)
    except ValueError as err:
        raise ConfigError(f"privacy.client_dp: {err}") from None
    if cfg.peft.head_init in ("probe", "class-means", "lda"):
        raise ConfigError(
            f"peft.head_init = {cfg.peft.head_init!r} computes the head from each "
            "client's raw data "
            "outside the DP accounting; use peft.head_init = 'zeros' (or 'random') "
            "with privacy.client_dp"
        )
    if dp.mode == "distributed" and secure is None:
        raise ConfigError(
            "privacy.client_dp.mode = 'distributed' adds only σ·C/√m noise per "
            "client and relies on secure aggregation to hide each share; set "
            "privacy.secagg = true or use mode = 'central'"
        )
    return DpAggregator(dp, cfg.seed, secure, p.secure)
