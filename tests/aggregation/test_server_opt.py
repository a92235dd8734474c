"""Tests for FedAdam/FedYogi (Reddi et al. 2021, Algorithm 2) against hand math."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from fedpeft.aggregation import (
    ServerOptConfig,
    ServerOptState,
    fedadam_step,
    fedyogi_step,
    init_state,
)
from fedpeft.types import Params

Step = Callable[
    [Params, Params, ServerOptState, ServerOptConfig], tuple[Params, ServerOptState]
]
ByHand = Callable[[float, list[float]], tuple[float, float, float]]
CFG = ServerOptConfig(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)


def _p(*values: float) -> Params:
    return {"x": np.asarray(values, dtype=np.float32)}


def _adam_by_hand(x: float, grads: list[float]) -> tuple[float, float, float]:
    m, v = 0.0, CFG.tau**2
    for g in grads:
        m = CFG.beta1 * m + (1 - CFG.beta1) * g
        v = CFG.beta2 * v + (1 - CFG.beta2) * g * g
        x = x + CFG.server_lr * m / (math.sqrt(v) + CFG.tau)
    return x, m, v


def _yogi_by_hand(x: float, grads: list[float]) -> tuple[float, float, float]:
    m, v = 0.0, CFG.tau**2
    for g in grads:
        m = CFG.beta1 * m + (1 - CFG.beta1) * g
        v = v - (1 - CFG.beta2) * g * g * float(np.sign(v - g * g))
        x = x + CFG.server_lr * m / (math.sqrt(v) + CFG.tau)
    return x, m, v


def test_init_state_is_zero_and_tau_squared() -> None:
    state = init_state(_p(1.0, 2.0), tau=0.1)
    np.testing.assert_array_equal(state.m["x"], [0.0, 0.0])
    np.testing.assert_allclose(state.v["x"], [0.01, 0.01])


def test_fedadam_one_step_by_hand() -> None:
    # m = 0.1 * 0.5 = 0.05; v = 0.99 * 0.01 + 0.01 * 0.25 = 0.0124
    # x = 1 + 0.05 / (sqrt(0.0124) + 0.1)
    x, state = fedadam_step(_p(1.0), _p(0.5), init_state(_p(1.0), CFG.tau), CFG)
    assert math.isclose(
        float(x["x"][0]), 1 + 0.05 / (math.sqrt(0.0124) + 0.1), rel_tol=1e-6
    )
    assert math.isclose(float(state.m["x"][0]), 0.05, rel_tol=1e-6)
    assert math.isclose(float(state.v["x"][0]), 0.0124, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("step", "by_hand"), [(fedadam_step, _adam_by_hand), (fedyogi_step, _yogi_by_hand)]
)
def test_two_steps_by_hand(step: Step, by_hand: ByHand) -> None:
    params, state = _p(1.0), init_state(_p(1.0), CFG.tau)
    for g in (0.5, -0.2):
        params, state = step(params, _p(g), state, CFG)
    x, m, v = by_hand(1.0, [0.5, -0.2])
    assert math.isclose(float(params["x"][0]), x, rel_tol=1e-6)
    assert math.isclose(float(state.m["x"][0]), m, rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(float(state.v["x"][0]), v, rel_tol=1e-6)


def test_yogi_differs_from_adam_where_expected() -> None:
    cfg = ServerOptConfig(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.5)
    start = init_state(_p(0.0, 0.0, 0.0), cfg.tau)  # v = τ² = 0.25 everywhere
    # Δ² > v (Δ = 1): Adam 0.99·0.25 + 0.01·1 = 0.2575; Yogi 0.25 + 0.01·1 = 0.26.
    # Δ² = v (Δ = 0.5): Yogi keeps v (sign 0); Adam 0.2475 + 0.0025 = 0.25 too.
    # Δ = 0: Adam decays v to 0.99·0.25 = 0.2475; Yogi keeps 0.25.
    grad = _p(1.0, 0.5, 0.0)
    _, adam = fedadam_step(_p(0.0, 0.0, 0.0), grad, start, cfg)
    _, yogi = fedyogi_step(_p(0.0, 0.0, 0.0), grad, start, cfg)
    np.testing.assert_allclose(adam.v["x"], [0.2575, 0.25, 0.2475], rtol=1e-6)
    np.testing.assert_allclose(yogi.v["x"], [0.26, 0.25, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(adam.m["x"], yogi.m["x"])  # same first moment


def test_yogi_shrinks_v_additively_when_gradient_is_small() -> None:
    cfg = ServerOptConfig(server_lr=1.0, beta1=0.0, beta2=0.5, tau=1.0)
    state = init_state(_p(0.0), tau=1.0)  # v = 1
    _, adam = fedadam_step(_p(0.0), _p(0.5), state, cfg)
    _, yogi = fedyogi_step(_p(0.0), _p(0.5), state, cfg)
    # Adam: 0.5 * 1 + 0.5 * 0.25 = 0.625; Yogi: 1 − 0.5 * 0.25 = 0.875
    assert math.isclose(float(adam.v["x"][0]), 0.625)
    assert math.isclose(float(yogi.v["x"][0]), 0.875)


def test_steps_do_not_mutate_inputs() -> None:
    params, grad, state = _p(1.0, 2.0), _p(0.1, -0.1), init_state(_p(1.0, 2.0), 0.1)
    fedadam_step(params, grad, state, CFG)
    np.testing.assert_array_equal(params["x"], [1.0, 2.0])
    np.testing.assert_array_equal(state.m["x"], [0.0, 0.0])
    np.testing.assert_allclose(state.v["x"], [0.01, 0.01])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"server_lr": 0.0}, "server_lr"),
        ({"tau": -1.0}, "tau"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": -0.1}, "beta2"),
    ],
)
def test_config_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServerOptConfig(**kwargs)


def test_state_layout_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="optimizer state m"):
        fedadam_step(_p(1.0, 2.0), _p(0.1, 0.1), init_state(_p(1.0), 0.1), CFG)
