"""Adaptive server optimizers FedAdam and FedYogi as pure functions.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2. The
pseudo-gradient Δ_t is the mean of the client deltas (a descent direction
already, so it is *added*); the paper averages uniformly, fedpeft's strategies
pass the example-weighted mean as Flower's FedOpt does. With β1, β2 ∈ [0, 1),
τ > 0, server learning rate η and element-wise operations:

    m_t = β1 m_{t−1} + (1 − β1) Δ_t                                  (Alg. 2, l. 11)
    v_t = β2 v_{t−1} + (1 − β2) Δ_t²                         FedAdam (Alg. 2, l. 13)
    v_t = v_{t−1} − (1 − β2) Δ_t² sign(v_{t−1} − Δ_t²)       FedYogi (Alg. 2, l. 14)
    x_{t+1} = x_t + η m_t / (√v_t + τ)                               (Alg. 2, l. 15)

Initial state m_{−1} = 0 and v_{−1} = τ² (the paper requires v_{−1} ≥ τ²). As in
the paper there is no bias correction. Each step computes in float64 and returns
float32 arrays and a new state; nothing is mutated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedpeft.types import Float64Array, Params, ParamsLike, check_params_like

SecondMoment = Callable[[Float64Array, Float64Array, float], Float64Array]
"""``(v_{t−1}, Δ_t², β2) -> v_t``."""


@dataclass(frozen=True)
class ServerOptState:
    """Moments of an adaptive server optimizer, one array per parameter tensor.

    Attributes:
        m: First moment m_t (same keys/shapes as the parameters).
        v: Second moment v_t (same keys/shapes; stays > 0).
    """

    m: Params
    v: Params


@dataclass(frozen=True)
class ServerOptConfig:
    """Hyperparameters of Algorithm 2 (Reddi et al. 2021).

    Attributes:
        server_lr: Server learning rate η > 0.
        beta1: First-moment decay β1 ∈ [0, 1).
        beta2: Second-moment decay β2 ∈ [0, 1).
        tau: Adaptivity τ > 0 (controls the smallest denominator).

    Raises:
        ValueError: on construction, for a value outside its range.
    """

    server_lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        for name, value in (("server_lr", self.server_lr), ("tau", self.tau)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not (0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def init_state(like: ParamsLike, tau: float) -> ServerOptState:
    """Initial state m = 0, v = τ² with ``like``'s keys and shapes."""
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    return ServerOptState(
        m={k: np.zeros(a.shape, dtype=np.float32) for k, a in like.items()},
        v={k: np.full(a.shape, tau**2, dtype=np.float32) for k, a in like.items()},
    )


def adam_second_moment(v: Float64Array, g2: Float64Array, beta2: float) -> Float64Array:
    """FedAdam: ``v_t = β2 v_{t−1} + (1 − β2) Δ²`` (Alg. 2, line 13)."""
    out: Float64Array = beta2 * v + (1.0 - beta2) * g2
    return out


def yogi_second_moment(v: Float64Array, g2: Float64Array, beta2: float) -> Float64Array:
    """FedYogi: ``v_t = v_{t−1} − (1 − β2) Δ² sign(v_{t−1} − Δ²)`` (Alg. 2, l. 14).

    Unlike Adam, v moves towards Δ² additively and stays put when Δ² = v, so a
    zero pseudo-gradient does not shrink v (no sudden large steps afterwards).
    """
    out: Float64Array = v - (1.0 - beta2) * g2 * np.sign(v - g2)
    return out


def _check_state(params: ParamsLike, state: ServerOptState) -> None:
    check_params_like(params, state.m, what="optimizer state m")
    check_params_like(params, state.v, what="optimizer state v")


def adaptive_step(
    params: ParamsLike,
    pseudo_grad: ParamsLike,
    state: ServerOptState,
    config: ServerOptConfig,
    second_moment: SecondMoment,
) -> tuple[Params, ServerOptState]:
    """One step of Algorithm 2 with the given second-moment rule.

    Args:
        params: Current global parameters x_t.
        pseudo_grad: Δ_t, the (example-weighted) mean client delta.
        state: Moments from the previous round (or :func:`init_state`).
        config: η, β1, β2, τ.
        second_moment: :func:`adam_second_moment` or :func:`yogi_second_moment`.

    Returns:
        New parameters x_{t+1} and the new state (m_t, v_t).

    Raises:
        ValueError: if ``pseudo_grad`` or the state do not match ``params``.
    """
    check_params_like(params, pseudo_grad, what="pseudo-gradient")
    _check_state(params, state)
    new_x: Params = {}
    new_m: Params = {}
    new_v: Params = {}
    for name, x in params.items():
        g = np.asarray(pseudo_grad[name], dtype=np.float64)
        m = config.beta1 * state.m[name].astype(np.float64) + (1 - config.beta1) * g
        v = second_moment(state.v[name].astype(np.float64), g * g, config.beta2)
        step = config.server_lr * m / (np.sqrt(np.maximum(v, 0.0)) + config.tau)
        new_x[name] = (np.asarray(x, dtype=np.float64) + step).astype(np.float32)
        new_m[name] = m.astype(np.float32)
        new_v[name] = v.astype(np.float32)
    return new_x, ServerOptState(m=new_m, v=new_v)


def fedadam_step(
    params: ParamsLike,
    pseudo_grad: ParamsLike,
    state: ServerOptState,
    config: ServerOptConfig,
) -> tuple[Params, ServerOptState]:
    """One FedAdam server step (Reddi et al. 2021, Algorithm 2, Adam branch)."""
    return adaptive_step(params, pseudo_grad, state, config, adam_second_moment)


def fedyogi_step(
    params: ParamsLike,
    pseudo_grad: ParamsLike,
    state: ServerOptState,
    config: ServerOptConfig,
) -> tuple[Params, ServerOptState]:
    """One FedYogi server step (Reddi et al. 2021, Algorithm 2, Yogi branch)."""
    return adaptive_step(params, pseudo_grad, state, config, yogi_second_moment)
