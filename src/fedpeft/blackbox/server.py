"""Aggregating the clients' searches into the global search distribution.

The global distribution is N(z, σ²·diag(s²)): the mean z travels as the
adapter's state (with the head), σ as the round's instruction config and the
d per-coordinate scales s (root mean square 1) as a
:data:`~fedpeft.messages.DOWNLINK` array beside the payload (``covariance =
"diagonal"``; with ``"isotropic"`` s stays 1 and is not sent). With
``peft.head = "fixed"`` the head (the round-0 warm start) travels down as
side information too, and only z is merged. Two rules:

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

The diagonal covariance is the server's own CMA-ES step on the client means,
as NVFlare's server runs it: each round a separable ``cma`` strategy is
rebuilt at (z, σ, s) with population 2m and μ = m, told the m means and their
fitness, and its new per-coordinate scales ``stds/σ``, rescaled to root mean
square 1, are s (σ comes from the clients, as above). Its new mean equals the
rank rule's. Unlike NVFlare, which pickles the whole ES object (a 500×500
covariance, ~2 MB) down every round, only d floats of s travel, and the
server's evolution paths are not kept between rounds (they restart from zero
each round, like every client's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpeft.messages import DOWNLINK, Instruction, Task
from fedpeft.server.aggregators import Metrics
from fedpeft.server.wrapped import WrappedServer
from fedpeft.types import ClientUpdate, Params

RULES = ("fedbpt", "mean")
SEARCH_STDS = DOWNLINK + "search_stds"
"""Payload key of the search's per-coordinate scales s (fit instructions)."""


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


def diagonal_step(
    z: np.ndarray,
    sigma: float,
    stds: np.ndarray,
    means: Sequence[np.ndarray],
    fitness: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """One separable CMA-ES step (``cma``) whose population is the client
    means: its new mean and its per-coordinate scales ``stds/σ`` rescaled to
    root mean square 1 (module docstring)."""
    m = len(means)
    if m == 1:  # one client left in the round: cma cannot select from a
        # population of one, so its mean is the step and the scales stay
        mean, shape = np.asarray(means[0], np.float64), np.asarray(stds, np.float64)
    else:
        mean, shape = _cma_step(z, sigma, stds, means, fitness)
    return mean, shape / math.sqrt(float(np.mean(shape * shape)))


def _cma_step(
    z: np.ndarray,
    sigma: float,
    stds: np.ndarray,
    means: Sequence[np.ndarray],
    fitness: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """cma's separable step with the client means as its population: the new
    mean and the scales ``stds/σ`` (not yet rescaled)."""
    import cma  # heavy to import; only the fedbpt rule needs it

    m = len(means)
    es = cma.CMAEvolutionStrategy(
        np.asarray(z, np.float64),
        sigma,
        {
            "popsize": 2 * m,
            "CMA_mu": m,
            "CMA_diagonal": True,
            "CMA_stds": np.asarray(stds, np.float64),
            "seed": np.nan,  # never reseed numpy's global generator
            "randn": lambda *shape: np.zeros(shape),  # the asked points are unused
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "tolfun": 0,
            "tolx": 0,
        },
    )
    es.ask()  # cma tells only after an ask
    es.tell([np.asarray(x, np.float64) for x in means], list(fitness))
    return np.asarray(es.mean), np.asarray(es.stds, np.float64) / es.sigma


@dataclass
class BlackBoxServer(WrappedServer):
    """The uniform server, plus the search's σ and FedBPT's merge rule.

    Attributes:
        inner: Instructions, warm start and the plain/secure mean.
        rule: ``"fedbpt"`` or ``"mean"`` (module docstring).
        sigma: The global step size (server state, checkpointed).
        diagonal: Adapt and send the per-coordinate scales s (fedbpt only).
        fixed_head: Send the head as side information (``peft.head =
            "fixed"``): clients return Δz alone, and the head keeps its
            round-0 value.
        stds: s, ``None`` until the first round (then ones of z's size).
    """

    rule: str = "fedbpt"
    sigma: float = 1.0
    diagonal: bool = False
    fixed_head: bool = False
    stds: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"server rule {self.rule!r}: choose one of {RULES}")
        if self.diagonal and self.rule != "fedbpt":
            raise ValueError("a diagonal covariance needs the fedbpt rule")
        super().__post_init__()

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        out = self.inner.instructions(rnd, task, params, selected)
        if task != "fit":
            return out
        sigma = {"sigma": self.sigma}
        payload = {
            DOWNLINK + n if self.fixed_head and n != "z" else n: v
            for n, v in params.items()
        }
        if self.diagonal:
            payload[SEARCH_STDS] = self._stds(params).astype(np.float32)
        return [
            dataclasses.replace(i, payload=payload, config={**i.config, **sigma})
            for i in out
        ]

    def _stds(self, params: Params) -> np.ndarray:
        if self.stds is None:
            self.stds = np.ones(params["z"].shape, np.float64)
        return self.stds

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        if not updates:
            return self.inner.merge(rnd, params, updates)
        sigma = client_sigma(updates, len(updates))
        sent = {"z": params["z"]} if self.fixed_head else params
        if self.rule == "mean":
            merged, metrics = self.inner.merge(rnd, sent, updates)
        else:
            merged, metrics = self._fedbpt(sent, updates)
        merged = {**params, **merged}
        self.sigma = sigma
        metrics = {**metrics, "search_sigma": sigma}
        if self.stds is not None:
            metrics["search_stds_min"] = float(self.stds.min())
            metrics["search_stds_max"] = float(self.stds.max())
        return merged, metrics

    def _fedbpt(
        self, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        updates = sorted(updates, key=lambda u: u.client_id)  # arrival order aside
        order = sorted(range(len(updates)), key=lambda i: updates[i].metrics["fitness"])
        weights = rank_weights(len(updates))
        z = params["z"] + sum(
            w * updates[i].delta["z"] for w, i in zip(weights, order, strict=True)
        )
        if self.diagonal:
            self.stds = diagonal_step(
                params["z"],
                self.sigma,
                self._stds(params),
                [params["z"] + u.delta["z"] for u in updates],
                [float(u.metrics["fitness"]) for u in updates],
            )[1]
        n = np.array([u.num_examples for u in updates], dtype=np.float64)
        merged = {"z": np.asarray(z, dtype=params["z"].dtype)}
        for name in params:
            if name != "z":
                step = sum(
                    (nk / n.sum()) * u.delta[name]
                    for nk, u in zip(n, updates, strict=True)
                )
                merged[name] = (params[name] + step).astype(params[name].dtype)
        return merged, {"num_clients": float(len(updates))}

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        own = {"search.sigma": np.array([self.sigma])}
        if self.stds is not None:
            own["search.stds"] = self.stds.copy()
        return {**self.inner.state_dict(), **own}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.sigma = float(state["search.sigma"][0])
        stds = state.get("search.stds")
        self.stds = None if stds is None else np.array(stds, np.float64)
        self.inner.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("search.")}
        )
