"""FedAvgM server momentum (fedpeft.strategies.momentum) against the velocity
recursion computed by hand, its checkpointed state, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.config import ConfigError
from fedpeft.strategies import FedAvg, build_strategy, strategy_config
from fedpeft.strategies.momentum import ServerMomentum
from fedpeft.types import ClientUpdate, Params

BETA = 0.9
P0: Params = {
    "w": np.array([1.0, -2.0], np.float32),
    "b": np.array([0.5], np.float32),
}


def _u(cid: int, n: int, w: list[float], b: float) -> ClientUpdate:
    return ClientUpdate(
        cid, {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}, n
    )


# Round 1: n = 10, 30 -> weights 1/4, 3/4.
ROUND1 = [_u(0, 10, [1.0, 0.0], 2.0), _u(1, 30, [-1.0, 2.0], 0.0)]
# d1 = (0.25·1 + 0.75·(−1), 0.25·0 + 0.75·2), b: 0.25·2 = (−0.5, 1.5), 0.5
D1 = {"w": np.array([-0.5, 1.5]), "b": np.array([0.5])}
# Round 2: n = 20, 20 -> weights 1/2, 1/2.
ROUND2 = [_u(2, 20, [0.4, -0.2], 1.0), _u(0, 20, [0.0, 0.6], -3.0)]
# d2 = (0.2, 0.2), b: −1
D2 = {"w": np.array([0.2, 0.2]), "b": np.array([-1.0])}


def _expected() -> tuple[Params, Params, Params]:
    """v1 = d1, P1 = P0 + v1; v2 = β v1 + d2, P2 = P1 + v2 (float64)."""
    v1 = dict(D1)
    p1 = {k: P0[k] + v1[k] for k in P0}
    v2 = {k: BETA * v1[k] + D2[k] for k in P0}
    p2 = {k: p1[k] + v2[k] for k in P0}
    return p1, v2, p2


def _close(got: Params, expected: Params) -> None:
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-6)


def test_two_rounds_follow_the_velocity_recursion() -> None:
    p1_hand, v2_hand, p2_hand = _expected()
    # P2 by hand: w = (1,−2) + (−0.5,1.5) + (0.9·(−0.5)+0.2, 0.9·1.5+0.2)
    #               = (0.25, 1.05);   b = 0.5 + 0.5 + (0.45 − 1) = 0.45
    _close(p2_hand, {"w": np.array([0.25, 1.05]), "b": np.array([0.45])})
    strategy = ServerMomentum(FedAvg(), BETA)
    p1, m1 = strategy.aggregate(1, P0, ROUND1)
    _close(p1, p1_hand)
    _close(strategy.velocity, D1)
    p2, m2 = strategy.aggregate(2, p1, ROUND2)
    _close(p2, p2_hand)
    _close(strategy.velocity, v2_hand)
    norm = float(np.sqrt(sum((v**2).sum() for v in v2_hand.values())))
    assert m2["momentum_norm"] == pytest.approx(norm, rel=1e-6)
    assert m1["num_clients"] == 2.0  # the wrapped strategy's metrics stay
    # Without momentum the second round would step by d2 alone.
    plain, _ = FedAvg().aggregate(2, p1, ROUND2)
    assert not np.allclose(plain["w"], p2["w"])
    # The inputs are not mutated.
    np.testing.assert_array_equal(P0["w"], [1.0, -2.0])


def test_step_alone_is_the_same_recursion() -> None:
    """The path secure aggregation and DP take: the mean is released, then
    ``step``."""
    p1_hand, _, p2_hand = _expected()
    strategy = ServerMomentum(FedAvg(), BETA)
    d1 = {k: v.astype(np.float32) for k, v in D1.items()}
    d2 = {k: v.astype(np.float32) for k, v in D2.items()}
    p1, _ = strategy.step(1, P0, d1)
    p2, _ = strategy.step(2, p1, d2)
    _close(p1, p1_hand)
    _close(p2, p2_hand)


def test_state_round_trip_continues_identically() -> None:
    first = build_strategy("fedavg", server_momentum=BETA)
    assert isinstance(first, ServerMomentum) and first.name == "fedavg+momentum"
    p1, _ = first.aggregate(1, P0, ROUND1)
    state = first.state_dict()
    assert set(state) == {"momentum/w", "momentum/b"}
    resumed = build_strategy("fedavg", server_momentum=BETA)
    resumed.load_state_dict(state)
    a, _ = first.aggregate(2, p1, ROUND2)
    b, _ = resumed.aggregate(2, p1, ROUND2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # A fresh strategy (no velocity) would step differently.
    fresh, _ = build_strategy("fedavg", server_momentum=BETA).aggregate(2, p1, ROUND2)
    assert not np.allclose(fresh["w"], a["w"])


def test_zero_momentum_builds_the_plain_strategy() -> None:
    for built in (build_strategy("fedavg"), build_strategy(strategy_config("fedprox"))):
        assert not isinstance(built, ServerMomentum)
        assert isinstance(built, FedAvg)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_server_optimizers_refuse_momentum_naming_the_fix(name: str) -> None:
    with pytest.raises(ConfigError, match="server_momentum = 0"):
        build_strategy(name, server_momentum=0.9)
    with pytest.raises(ConfigError, match="server_momentum = 0"):
        build_strategy(strategy_config(name, server_momentum=0.5))


def test_momentum_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"server_momentum=1.0 must be in \[0, 1\)"):
        ServerMomentum(FedAvg(), 1.0)
    with pytest.raises(ConfigError, match="server_momentum"):
        strategy_config("fedavg", server_momentum=1.0)
