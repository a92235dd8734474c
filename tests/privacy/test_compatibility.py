"""Tests for fedpeft.privacy.compatibility: the DP strategy table."""

from __future__ import annotations

import pytest

from fedpeft.privacy import ALLOWED, REFUSED, check_strategy_compatible
from fedpeft.strategies import STRATEGIES


def test_uniform_mean_and_server_optimizers_allowed() -> None:
    assert check_strategy_compatible("fedprompt").role == "uniform_mean"
    assert check_strategy_compatible("fedadam").role == "server_optimizer"
    assert check_strategy_compatible("fedyogi").role == "server_optimizer"


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "dynamic"])
def test_weighted_strategies_refused_with_allowed_list(name: str) -> None:
    with pytest.raises(ValueError) as info:
        check_strategy_compatible(name)
    message = str(info.value)
    assert repr(name) in message
    assert "'fedprompt'" in message and "'fedadam'" in message


def test_unknown_strategy_refused() -> None:
    with pytest.raises(ValueError, match="no client-level DP rule"):
        check_strategy_compatible("fedfancy")


def test_table_covers_every_registered_strategy() -> None:
    # "fedopt" is the abstract base of fedadam/fedyogi and not registered
    assert set(STRATEGIES) <= set(ALLOWED) | set(REFUSED)
    assert len(STRATEGIES) >= 6
