"""Tests for fedpeft.privacy.compatibility: each strategy's declared DP role."""

from __future__ import annotations

import pytest

from fedpeft.privacy import check_strategy_compatible
from fedpeft.strategies import STRATEGIES, build_strategy


def test_uniform_mean_and_server_optimizers_allowed() -> None:
    role = {
        n: check_strategy_compatible(build_strategy(n)).role
        for n in ("fedprompt", "fedadam", "fedyogi")
    }
    assert role == {
        "fedprompt": "uniform_mean",
        "fedadam": "server_optimizer",
        "fedyogi": "server_optimizer",
    }


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "dynamic"])
def test_weighted_strategies_refused_with_reason_and_allowed_list(name: str) -> None:
    with pytest.raises(ValueError) as info:
        check_strategy_compatible(build_strategy(name))
    message = str(info.value)
    assert repr(name) in message
    assert "'fedprompt'" in message and "'fedadam'" in message
    assert build_strategy(name).dp_refusal in message


def test_strategy_without_a_role_is_refused() -> None:
    class Fancy:
        name = "fedfancy"
        dp_role = None
        dp_refusal = ""

    with pytest.raises(ValueError, match="declares no client-level DP role"):
        check_strategy_compatible(Fancy())


def test_every_registered_strategy_states_a_role_or_a_reason() -> None:
    for name in STRATEGIES:
        strategy = build_strategy(name)
        assert (strategy.dp_role is None) == bool(strategy.dp_refusal), name
    assert len(STRATEGIES) >= 6
