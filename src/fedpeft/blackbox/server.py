"""Aggregating the clients' searches into the global search distribution.

The global distribution is N(z, σ²·I): the mean z travels as the adapter's
state (with the head), σ as the round's instruction config. Two rules:

* ``fedbpt`` (Sun et al. 2024, as NVFlare's ``global_es.py`` does it): the
  server treats the m client means as its own population. σ is first set
  from the clients' step sizes, ``σ² = Σ_k Σ_t σ_{k,t}² / (m·μ)`` (a local
  CMA-ES step moves the mean by about σ_t/√μ), then the means, ranked by the
  fitness each client measured on its own data, are recombined with CMA's
  log-rank weights ``w_i ∝ ln((2m+1)/2) − ln i`` (i = 1..m). Needs every
  client's mean in the clear, so it refuses secure aggregation. The heads
  are averaged by n_k.
* ``mean``: the strategy's n_k-weighted mean of the client updates, through
  the run's aggregator (plain, secure or DP), and σ from the same rule.

NVFlare's server also runs CMA's covariance and step-size updates on the
client means and ships the whole pickled ES object down; here nothing but z,
the head and σ travels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpeft.messages import Instruction, Task
from fedpeft.server.aggregators import Metrics
from fedpeft.server.uniform import UniformServer
from fedpeft.types import ClientUpdate, Params

RULES = ("fedbpt", "mean")


def rank_weights(m: int) -> np.ndarray:
    """CMA-ES's positive recombination weights of a population of 2m (FedBPT's
    server sets ``CMA_mu = m``): ``w_i ∝ ln((2m+1)/2) − ln i``, i = 1..m."""
    raw = math.log((2 * m + 1) / 2) - np.log(np.arange(1, m + 1))
    return raw / raw.sum()  # type: ignore[no-any-return]


def client_sigma(updates: Sequence[ClientUpdate], m: int) -> float:
    """FedBPT's σ from the clients' step sizes: √(Σ_k s_k / (m·μ))."""
    total = sum(float(u.metrics["sigma_sq_sum"]) for u in updates)
    mu = float(updates[0].metrics["search_mu"])
    return math.sqrt(total / (m * mu))


@dataclass
class BlackBoxServer:
    """The uniform server, plus the search's σ and FedBPT's merge rule.

    Attributes:
        inner: Instructions, warm start and the plain/secure mean.
        rule: ``"fedbpt"`` or ``"mean"`` (module docstring).
        sigma: The global step size (server state, checkpointed).
    """

    inner: UniformServer
    rule: str = "fedbpt"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"server rule {self.rule!r}: choose one of {RULES}")
        self.aggregator = self.inner.aggregator

    @property
    def eligible(self) -> list[int]:
        return self.inner.eligible

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        out = self.inner.instructions(rnd, task, params, selected)
        if task != "fit":
            return out
        sigma = {"sigma": self.sigma}
        return [dataclasses.replace(i, config={**i.config, **sigma}) for i in out]

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        if not updates:
            return self.inner.merge(rnd, params, updates)
        sigma = client_sigma(updates, len(updates))
        if self.rule == "mean":
            merged, metrics = self.inner.merge(rnd, params, updates)
        else:
            merged, metrics = self._fedbpt(params, updates)
        self.sigma = sigma
        return merged, {**metrics, "search_sigma": sigma}

    def _fedbpt(
        self, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        order = sorted(range(len(updates)), key=lambda i: updates[i].metrics["fitness"])
        weights = rank_weights(len(updates))
        z = params["z"] + sum(
            w * updates[i].delta["z"] for w, i in zip(weights, order, strict=True)
        )
        n = np.array([u.num_examples for u in updates], dtype=np.float64)
        merged = {"z": np.asarray(z, dtype=params["z"].dtype)}
        for name in params:
            if name != "z":
                step = sum(
                    (nk / n.sum()) * u.delta[name]
                    for nk, u in zip(n, updates, strict=True)
                )
                merged[name] = (params[name] + step).astype(params[name].dtype)
        return merged, {"clients": float(len(updates))}

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        return self.inner.merge_warm_start(task, params, replies)

    def eval_state(self, params: Params) -> tuple[Params, None]:
        return params, None

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return {**self.inner.state_dict(), "search.sigma": np.array([self.sigma])}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.sigma = float(state["search.sigma"][0])
        self.inner.load_state_dict(
            {k: v for k, v in state.items() if k != "search.sigma"}
        )
