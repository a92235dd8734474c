"""Tests for the server-side strategies, the registry and client sampling."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from fedpeft.config import ConfigError
from fedpeft.strategies import (
    STRATEGIES,
    Dynamic,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
    build_strategy,
    sample_clients,
    strategy_config,
)
from fedpeft.types import ClientUpdate, Params


def _p(*values: float) -> Params:
    return {"w": np.asarray(values, dtype=np.float32), "b": np.zeros(1, np.float32)}


def _u(cid: int, n: int, *values: float, **metrics: float) -> ClientUpdate:
    return ClientUpdate(
        client_id=cid, delta=_p(*values), num_examples=n, metrics=metrics
    )


GLOBAL = _p(1.0, 1.0)
UPDATES = [_u(0, 10, 1.0, 0.0), _u(1, 30, -1.0, 2.0)]


def test_registry_holds_every_strategy() -> None:
    names = ["dynamic", "fedadam", "fedavg", "fedprompt", "fedprox", "fedyogi"]
    assert list(STRATEGIES) == names
    for name in names:
        strategy = build_strategy(name)
        assert isinstance(strategy, Strategy)
        assert strategy.name == name


def test_fedavg_example_weighted() -> None:
    # weights 10/40, 30/40: w = 1 + (0.25·1 + 0.75·(−1), 0.25·0 + 0.75·2) = (0.5, 2.5)
    new, metrics = FedAvg().aggregate(1, GLOBAL, UPDATES)
    np.testing.assert_allclose(new["w"], [0.5, 2.5])
    np.testing.assert_array_equal(new["b"], [0.0])
    assert metrics["weight_max"] == 0.75 and metrics["weight_min"] == 0.25
    assert metrics["num_clients"] == 2.0


def test_fedprompt_uniform() -> None:
    # w = 1 + (0.5·1 + 0.5·(−1), 0.5·0 + 0.5·2) = (1, 2), whatever the counts
    new, metrics = build_strategy("fedprompt").aggregate(1, GLOBAL, UPDATES)
    np.testing.assert_allclose(new["w"], [1.0, 2.0])
    assert metrics["weight_max"] == metrics["weight_min"] == 0.5


def test_fedprox_is_fedavg_with_client_config() -> None:
    prox = build_strategy("fedprox", proximal_mu=0.1)
    assert prox.client_config(3) == {"proximal_mu": 0.1}
    assert FedAvg().client_config(3) == {}
    new, _ = prox.aggregate(1, GLOBAL, UPDATES)
    expected, _ = FedAvg().aggregate(1, GLOBAL, UPDATES)
    np.testing.assert_array_equal(new["w"], expected["w"])
    with pytest.raises(ValueError, match="proximal_mu"):
        FedProx(proximal_mu=-1.0)


def test_build_strategy_refuses_foreign_options_and_unknown_names() -> None:
    dyn = build_strategy("dynamic", gamma=3.0)
    assert isinstance(dyn, Dynamic) and dyn.gamma == 3.0
    assert isinstance(build_strategy(), FedAvg)  # the registry's default
    with pytest.raises(ConfigError) as err:
        build_strategy("fedavg", proximal_mu=0.5)
    assert (
        "strategy.proximal_mu is not an option of strategy.name='fedavg'; its "
        "options: fraction_fit, min_fit_clients, server_momentum, scaffold; "
        "proximal_mu is an option of strategy.name='fedprox'"
    ) in str(err.value)
    with pytest.raises(ConfigError, match=r"strategy.name='dynamic'"):
        build_strategy("dynamic", gamma=3.0, proximal_mu=0.5)
    with pytest.raises(
        ConfigError, match=r"unknown strategy 'fedavgg'. Did you mean 'fedavg'\?"
    ):
        build_strategy("fedavgg")
    with pytest.raises(ConfigError, match=r"strategy.gamma = -1.0"):
        build_strategy("dynamic", gamma=-1.0)
    with pytest.raises(ConfigError, match=r"strategy.beta2 = 1.0"):
        build_strategy("fedyogi", beta2=1.0)


def test_build_strategy_from_an_options_object_with_overrides() -> None:
    options = strategy_config("fedprox", proximal_mu=0.2, fraction_fit=0.3)

    prox = build_strategy(options)
    closer = build_strategy(options, proximal_mu=0.7)

    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.2
    assert isinstance(closer, FedProx) and closer.proximal_mu == 0.7
    assert options.model_dump()["proximal_mu"] == 0.2  # not mutated
    with pytest.raises(ConfigError, match="gamma is an option of"):
        build_strategy(options, gamma=1.0)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_constructor_takes_exactly_its_options(name: str) -> None:
    options = STRATEGIES.options(name)()
    cls = STRATEGIES.factory(name)

    accepted = set(inspect.signature(cls).parameters)

    assert accepted == set(options.strategy_options())
    assert options.name == name


def test_dynamic_strategy_uses_val_loss_when_asked() -> None:
    same = [_u(0, 1, 1.0, 1.0, val_loss=0.0), _u(1, 1, 1.0, 1.0, val_loss=1.0)]
    strategy = Dynamic(gamma=1.0, quality_beta=1.0)
    weights = strategy.compute_weights(same).weights
    e = math.exp(-1.0)
    np.testing.assert_allclose(weights, [1 / (1 + e), e / (1 + e)])
    _, metrics = strategy.aggregate(1, GLOBAL, same)
    assert metrics["distance_max"] == 0.0
    with pytest.raises(ValueError, match="client 7 has no 'val_loss'"):
        strategy.aggregate(1, GLOBAL, [same[0], _u(7, 1, 1.0, 1.0)])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_inputs_not_mutated(name: str) -> None:
    global_params = _p(1.0, 1.0)
    updates = [_u(0, 10, 1.0, 0.0, val_loss=0.1), _u(1, 30, -1.0, 2.0, val_loss=0.2)]
    global_copy = {k: v.copy() for k, v in global_params.items()}
    delta_copies = [{k: v.copy() for k, v in u.delta.items()} for u in updates]
    options = {"quality_beta": 1.0} if name == "dynamic" else {}
    new, _ = build_strategy(name, **options).aggregate(1, global_params, updates)
    new["w"][:] = 42.0  # the result shares no memory with the inputs either
    for k in global_params:
        np.testing.assert_array_equal(global_params[k], global_copy[k])
    for u, copy in zip(updates, delta_copies, strict=True):
        for k in copy:
            np.testing.assert_array_equal(u.delta[k], copy[k])


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_server_opt_state_round_trip_reproduces_next_step(name: str) -> None:
    first = build_strategy(name, server_lr=0.5, tau=0.1)
    assert first.state_dict() == {}
    params, _ = first.aggregate(1, GLOBAL, UPDATES)
    saved = first.state_dict()
    assert set(saved) == {"m/w", "m/b", "v/w", "v/b"}
    resumed = build_strategy(name, server_lr=0.5, tau=0.1)
    resumed.load_state_dict(saved)
    later = [_u(0, 5, 0.3, -0.2), _u(2, 5, 0.1, 0.4)]
    expected, _ = first.aggregate(2, params, later)
    got, _ = resumed.aggregate(2, params, later)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
    # a fresh strategy (no state) takes a different second step
    fresh, _ = build_strategy(name, server_lr=0.5, tau=0.1).aggregate(2, params, later)
    assert not np.array_equal(fresh["w"], expected["w"])


def test_fedadam_first_step_by_hand() -> None:
    # Δ = FedAvg mean = (−0.5, 1.5); m = 0.1Δ; v = 0.99τ² + 0.01Δ²; x += η m/(√v + τ)
    strategy = FedAdam(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)
    new, metrics = strategy.aggregate(1, GLOBAL, UPDATES)
    expected = [
        1.0 + 0.1 * g / (math.sqrt(0.99 * 0.01 + 0.01 * g * g) + 0.1)
        for g in (-0.5, 1.5)
    ]
    np.testing.assert_allclose(new["w"], expected, rtol=1e-6)
    assert math.isclose(metrics["pseudo_grad_norm"], math.hypot(0.5, 1.5), rel_tol=1e-6)


def test_stateless_strategies_and_bad_state() -> None:
    assert FedAvg().state_dict() == {}
    FedAvg().load_state_dict({})
    with pytest.raises(ValueError, match="stateless"):
        FedAvg().load_state_dict({"m/w": np.zeros(2)})
    with pytest.raises(ValueError, match="unexpected keys"):
        FedAdam().load_state_dict({"x/w": np.zeros(2)})
    with pytest.raises(ValueError, match="same keys and shapes"):
        FedAdam().load_state_dict({"m/w": np.zeros(2), "v/w": np.zeros(3)})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_bad_updates_rejected_naming_the_client(name: str) -> None:
    strategy = build_strategy(name)
    wrong_shape = ClientUpdate(
        5, {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}, 1
    )
    missing = ClientUpdate(6, {"w": np.zeros(2, np.float32)}, 1)
    nan = _u(7, 1, math.nan, 0.0)
    for bad, pattern in [
        (wrong_shape, "client 5 tensor 'w' has shape"),
        (missing, r"client 6 has the wrong keys: missing \['b'\]"),
        (nan, "client 7 tensor 'w' contains NaN"),
        (_u(8, -1, 0.0, 0.0), "client 8 has num_examples=-1"),
        (_u(0, 1, 0.0, 0.0), "client 0 sent more than one update"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            strategy.aggregate(1, GLOBAL, [UPDATES[0], bad])
    with pytest.raises(ValueError, match="no client updates"):
        strategy.aggregate(1, GLOBAL, [])


def test_sample_clients_deterministic_and_bounded() -> None:
    a = sample_clients(100, 0.1, 2, np.random.default_rng(7))
    b = sample_clients(100, 0.1, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert len(a) == 10 and len(set(a.tolist())) == 10
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 100
    assert len(sample_clients(100, 0.01, 5, np.random.default_rng(0))) == 5  # min wins
    assert len(sample_clients(3, 0.5, 10, np.random.default_rng(0))) == 3  # capped at N
    assert (
        len(sample_clients(5, 0.5, 1, np.random.default_rng(0))) == 3
    )  # 2.5 rounds up
    np.testing.assert_array_equal(
        sample_clients(4, 1.0, 1, np.random.default_rng(0)), [0, 1, 2, 3]
    )
    seeds = {
        tuple(sample_clients(50, 0.2, 1, np.random.default_rng(s))) for s in range(5)
    }
    assert len(seeds) > 1  # different seeds draw different clients


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0.5, 1), "num_clients"),
        ((10, 1.5, 1), "fraction"),
        ((10, -0.1, 1), "fraction"),
        ((10, 0.5, 0), "min_clients"),
        ((10.0, 0.5, 1), "num_clients"),
    ],
)
def test_sample_clients_validates(args: tuple[int, float, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_clients(*args, rng=np.random.default_rng(0))
