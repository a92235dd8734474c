"""A strategy defined here, outside the package, registered and built from a run
configuration: a new strategy needs its options class, its class and one
registration, with no edit to fedpeft itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from fedpeft.config import ConfigError, build_config, load_config
from fedpeft.server.build import strategy_from_config
from fedpeft.strategies import STRATEGIES, FedAvg, StrategyOptions, register_strategy
from fedpeft.types import ClientUpdate, Params

NAME = "test-damped-fedavg"


class DampedOptions(StrategyOptions):
    """FedAvg with a damped server step."""

    name: Literal["test-damped-fedavg"] = "test-damped-fedavg"
    damping: float = Field(1.0, gt=0.0, le=1.0, description="share of the step")


class DampedFedAvg(FedAvg):
    """FedAvg whose server step is ``damping`` times the weighted mean delta."""

    name = NAME

    def __init__(self, damping: float = 1.0) -> None:
        self.damping = damping

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        damped = {k: self.damping * v for k, v in mean_delta.items()}
        return super().step(server_round, global_params, damped)


@pytest.fixture
def damped() -> Iterator[str]:
    register_strategy(NAME, DampedOptions)(DampedFedAvg)
    try:
        yield NAME
    finally:
        STRATEGIES.remove(NAME)


def test_a_strategy_registered_outside_the_package_is_built_from_the_config(
    damped: str,
) -> None:
    cfg = load_config(None, [f"strategy.name={damped}", "strategy.damping=0.25"])
    params = {"w": np.array([1.0, 1.0], np.float32)}
    # weights 1/4, 3/4: mean delta = (0.25·4 + 0.75·0, 0) = (1, 0)
    updates = [
        ClientUpdate(0, {"w": np.array([4.0, 0.0], np.float32)}, 1),
        ClientUpdate(1, {"w": np.array([0.0, 0.0], np.float32)}, 3),
    ]

    strategy = strategy_from_config(cfg)
    new, _ = strategy.aggregate(1, params, updates)

    assert isinstance(strategy, DampedFedAvg) and strategy.damping == 0.25
    np.testing.assert_allclose(new["w"], [1.25, 1.0])
    assert build_config(cfg.to_dict()) == cfg
    assert cfg.to_dict()["strategy"] == {
        "name": damped,
        "fraction_fit": 0.5,
        "min_fit_clients": 2,
        "server_momentum": 0.0,
        "scaffold": False,
        "damping": 0.25,
    }


def test_its_option_is_refused_for_other_strategies_and_it_can_be_removed(
    damped: str,
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["strategy.damping=0.5"])
    assert f"damping is an option of strategy.name={damped!r}" in str(err.value)

    STRATEGIES.remove(damped)
    try:
        with pytest.raises(ConfigError, match=f"unknown strategy {damped!r}"):
            load_config(None, [f"strategy.name={damped}"])
    finally:
        register_strategy(NAME, DampedOptions)(DampedFedAvg)  # for the fixture
