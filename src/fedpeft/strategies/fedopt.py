"""FedAdam and FedYogi: adaptive server optimizers over the FedAvg pseudo-gradient.

Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2. The
pseudo-gradient is the example-weighted mean client delta (the paper's Algorithm 2
averages uniformly; weighting by n_k follows FedAvg and Flower); the update rules live
in :mod:`fedpeft.aggregation.server_opt`. The moments m and v are server state:
:meth:`FedOpt.state_dict` exposes them for checkpointing as ``m/<name>`` and
``v/<name>`` arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from fedpeft.aggregation import (
    ServerOptConfig,
    ServerOptState,
    adam_second_moment,
    adaptive_step,
    global_norm,
    init_state,
    yogi_second_moment,
)
from fedpeft.strategies.base import (
    DpRole,
    register_strategy,
)
from fedpeft.strategies.config import StrategyOptions
from fedpeft.strategies.fedavg import FedAvg
from fedpeft.types import Float64Array, Params


def _moments(state: Mapping[str, np.ndarray[Any, Any]], prefix: str) -> Params:
    """The arrays under ``prefix`` (``"m/"`` or ``"v/"``), copied as float32."""
    return {
        k[len(prefix) :]: np.array(a, dtype=np.float32)
        for k, a in state.items()
        if k.startswith(prefix)
    }


class FedOptOptions(StrategyOptions):
    """The server optimizer's options, shared by FedAdam and FedYogi (not
    registered itself)."""

    server_lr: float = Field(
        1e-2, gt=0.0, allow_inf_nan=False, description="FedAdam/FedYogi η"
    )
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.99, ge=0.0, lt=1.0)
    tau: float = Field(1e-3, gt=0.0, allow_inf_nan=False)


class FedAdamOptions(FedOptOptions):
    """FedAdam's options: server learning rate, moment decays, adaptivity."""

    name: Literal["fedadam"] = "fedadam"


class FedYogiOptions(FedOptOptions):
    """FedYogi's options: server learning rate, moment decays, adaptivity."""

    name: Literal["fedyogi"] = "fedyogi"


class FedOpt(FedAvg):
    """Shared body of FedAdam/FedYogi (Reddi et al. 2021, Algorithm 2): FedAvg's
    weights (plain and secure) and merge, with the adaptive server step.

    Args:
        server_lr: Server learning rate η > 0.
        beta1: First-moment decay β1 ∈ [0, 1).
        beta2: Second-moment decay β2 ∈ [0, 1).
        tau: Adaptivity τ > 0; v starts at τ².

    Raises:
        ValueError: for a value outside its range.
    """

    name = "fedopt"
    dp_role: DpRole | None = "server_optimizer"
    dp_refusal = ""

    def __init__(
        self,
        server_lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        self.config = ServerOptConfig(server_lr, beta1, beta2, tau)
        self._state: ServerOptState | None = None

    def second_moment(
        self, v: Float64Array, g2: Float64Array, beta2: float
    ) -> Float64Array:
        """``(v_{t−1}, Δ_t², β2) -> v_t``; defined by FedAdam and FedYogi."""
        raise NotImplementedError(f"{type(self).__name__} defines no v update")

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        """One server-optimizer step with ``mean_delta`` as the pseudo-gradient
        Δ_t; metrics: ``pseudo_grad_norm`` (‖Δ_t‖).

        Raises:
            ValueError: if a loaded state's layout differs from ``global_params``.
        """
        state = self._state or init_state(global_params, self.config.tau)
        new_params, self._state = adaptive_step(
            global_params, mean_delta, state, self.config, self.second_moment
        )
        return new_params, {"pseudo_grad_norm": global_norm(mean_delta)}

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Copies of m and v as ``m/<name>``, ``v/<name>``; ``{}`` before round 1."""
        if self._state is None:
            return {}
        out = {f"m/{k}": a.copy() for k, a in self._state.m.items()}
        out.update({f"v/{k}": a.copy() for k, a in self._state.v.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore m and v from :meth:`state_dict` (``{}`` resets to the start).

        Raises:
            ValueError: if a key lacks the ``m/``/``v/`` prefix or m and v differ in
                keys or shapes.
        """
        if len(state) == 0:
            self._state = None
            return
        bad = sorted(k for k in state if not k.startswith(("m/", "v/")))
        if bad:
            raise ValueError(f"{self.name} state has unexpected keys {bad}")
        m, v = _moments(state, "m/"), _moments(state, "v/")
        if m.keys() != v.keys() or any(m[k].shape != v[k].shape for k in m):
            raise ValueError(
                f"{self.name} state: m and v must have the same keys and shapes, "
                f"got m {sorted(m)} and v {sorted(v)}"
            )
        self._state = ServerOptState(m=m, v=v)


@register_strategy("fedadam", FedAdamOptions)
class FedAdam(FedOpt):
    """Adam on the server (Reddi et al. 2021, Algorithm 2, FedAdam)."""

    name = "fedadam"

    def second_moment(
        self, v: Float64Array, g2: Float64Array, beta2: float
    ) -> Float64Array:
        """Adam's ``v_t = β2 v + (1 − β2) Δ²`` (Alg. 2, line 13)."""
        return adam_second_moment(v, g2, beta2)


@register_strategy("fedyogi", FedYogiOptions)
class FedYogi(FedOpt):
    """Yogi on the server (Reddi et al. 2021, Algorithm 2, FedYogi)."""

    name = "fedyogi"

    def second_moment(
        self, v: Float64Array, g2: Float64Array, beta2: float
    ) -> Float64Array:
        """Yogi's ``v_t = v − (1 − β2) Δ² sign(v − Δ²)`` (Alg. 2, line 14)."""
        return yogi_second_moment(v, g2, beta2)
