"""Federated LoRA with a different adapter size on every client.

Device allocation (:mod:`fedpeft.devices`) gives each client a LoRA size, a rank
and a number of tuned top layers, or excludes it. This server algorithm sends
every client its slice of one global adapter and merges the updates with a
heterogeneous-rank rule (:mod:`fedpeft.aggregation.hetlora`, `.flexlora`, `.ffa_lora`).

The server holds one global adapter at the largest size: rank ``r_max`` on every
layer. A client of size (r, l) receives the slice it holds, the first r rank
components of the top l layers' pairs, trains it and sends ΔP back (as real
serialized bytes). Each pair is then merged over the sampled clients that hold
it; pairs and rank components that no sampled client holds keep their global
values, and dense tensors (the head) are averaged over every sampled client
weighted by n_k. Rules:

* ``hetlora`` (Cho et al. 2024): zero-pad to the holders' largest rank, weights
  ∝ n_k · ‖ΔW_k‖ over the client's whole adapter; clients get the truncation.
  (The paper's rank self-pruning is not applied here.)
* ``flexlora`` (Bai et al. 2024): the server keeps the weighted mean of the
  holders' products ΔW = s·B·A per pair; a client gets the truncated SVD at its
  rank, null components refilled from the initial A
  (:func:`~fedpeft.aggregation.flexlora.flexlora_distribute`).
* ``ffa`` (FFA-LoRA, Sun et al. 2024): every A stays at its seeded initial value
  and is never sent; clients train and send only B, averaged per column over
  the clients holding that column.
* ``fedavg``: HetLoRA's padding with plain n_k weights; with equal sizes this is
  FedAvg of A and B.

FLoRA (exact stacking) is not offered: it needs the stacked product merged into
the frozen weights every round, and the backbone is shared, read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedpeft.aggregation.ffa_lora import ffa_lora_aggregate
from fedpeft.aggregation.flexlora import flexlora_aggregate, flexlora_distribute
from fedpeft.aggregation.hetlora import (
    hetlora_aggregate,
    hetlora_truncate,
    hetlora_weights,
)
from fedpeft.aggregation.lda import split_candidates, with_candidates
from fedpeft.aggregation.lora import (
    LORA_A,
    LORA_B,
    LORA_DELTA,
    RankScaling,
    lora_pairs,
    lora_scaling,
)
from fedpeft.aggregation.mean import weighted_mean
from fedpeft.messages import Instruction, Task
from fedpeft.server import mixed_secure as secure_rule
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.server.warm_start import (
    merge_calibration,
    merge_class_stats,
    merge_probe_heads,
    stats_config,
)
from fedpeft.types import ClientUpdate, Params

HeteroRule = Literal["hetlora", "flexlora", "ffa", "fedavg"]
HETERO_RULES: tuple[str, ...] = ("hetlora", "flexlora", "ffa", "fedavg")


@dataclass(frozen=True, order=True)
class LoraSize:
    """One client's LoRA size: ``rank`` on the top ``layers`` layers (0 = all)."""

    rank: int
    layers: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.layers < 0:
            raise ValueError(f"LoRA size needs rank >= 1 and layers >= 0, got {self}")

    @property
    def label(self) -> str:
        return f"r{self.rank}" + (f"@top{self.layers}" if self.layers else "@all")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rank, self.layers)


def _pair_of(key: str) -> str:
    """The pair name (``lora_delta``) of an A or B key; dense keys map to ''."""
    for part in (LORA_A, LORA_B, LORA_DELTA):
        if part in key:
            return key.replace(part, LORA_DELTA)
    return ""


@dataclass
class MixedLoraServer:
    """Federated LoRA where every client trains the size it was allocated.

    Attributes:
        sizes: Per client its :class:`LoraSize`, or ``None`` when the
            allocation excluded it (never sampled, still evaluated).
        rule: One of :data:`HETERO_RULES`.
        initial: The seeded r_max adapter on every layer (with FFA's frozen A).
        layouts: Per size, the keys of the trainable state a client of that
            size holds.
        alpha / scaling: LoRA's α and rank scaling.
        aggregator: Plain, or secure (HetLoRA, FFA-LoRA and padded FedAvg
            merge through it: :mod:`fedpeft.server.mixed_secure`); also the
            warm start's mean.
        total_examples: Σ n_k over the federation (public; scales the secure
            contributions into the quantizer's range).
    """

    sizes: Sequence[LoraSize | None]
    rule: str
    initial: Params
    layouts: Mapping[LoraSize, Sequence[str]]
    alpha: float
    scaling: RankScaling
    aggregator: Aggregator
    total_examples: int = 1
    _sent: dict[int, Params] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rule not in HETERO_RULES:
            raise ValueError(
                f"rule={self.rule!r} is unknown; use one of {HETERO_RULES}"
            )
        held = [s for s in self.sizes if s is not None]
        if not held:
            raise ValueError("every client is excluded; nothing can train")
        self.r_max = max(s.rank for s in held)
        self.full = LoraSize(self.r_max, 0)

    @property
    def eligible(self) -> list[int]:
        return [k for k, s in enumerate(self.sizes) if s is not None]

    # ------------------------------------------------------- global state
    def start(self, state: Params) -> Params:
        """Global state at round 0 (FlexLoRA keeps products, not factors)."""
        if self.rule == "flexlora":
            return flexlora_aggregate(
                [state], [1.0], alpha=self.alpha, rank_scaling=self.scaling
            )
        return state

    def _factors(self, state: Params, rank: int) -> Params:
        """The global adapter as (A, B) factors at ``rank`` on every layer."""
        if self.rule == "flexlora":
            return flexlora_distribute(
                state,
                rank,
                alpha=self.alpha,
                rank_scaling=self.scaling,
                null_A=self.initial,
            )
        return hetlora_truncate(state, rank, rank_scaling=self.scaling)

    def client_state(self, state: Params, size: LoraSize) -> Params:
        """The slice of the global adapter a client of ``size`` trains."""
        factors = self._factors(state, size.rank)
        return {k: factors[k] for k in self.layouts[size]}

    def frozen_a(self, size: LoraSize) -> Params:
        """FFA-LoRA: the seeded frozen A rows a client of ``size`` holds (never
        sent: both sides derive them from the run seed)."""
        if self.rule != "ffa":
            return {}
        trainable = set(self.layouts[size])
        return {
            k: v[: size.rank]
            for k, v in self.initial.items()
            if LORA_A in k and k.replace(LORA_A, LORA_B) in trainable
        }

    # ------------------------------------------------------------ rounds
    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        out = []
        self._sent = {}
        for k in selected:
            size = self.sizes[k]
            if size is None:
                raise ValueError(f"client {k} is excluded and cannot be sent work")
            rest, candidates = split_candidates(params)  # lda's, on calibration
            payload = self.client_state(rest, size)
            if candidates:
                payload = with_candidates(payload, candidates)
            self._sent[k] = payload
            config = (
                stats_config(self.total_examples)
                if task in ("class-stats", "calibrate")
                else {}
            )
            out.append(Instruction(k, rnd, task, payload, config, size.shape))
        return out

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """Each client's trained state (sent slice + ΔP), merged by the rule."""
        if not updates:
            return params, {}
        if self.aggregator.secure is not None:
            return self._secure_merge(rnd, params, updates)
        trained = [(self._local_state(u), u.num_examples) for u in updates]
        return self.aggregate(params, trained), {}

    def _local_state(self, update: ClientUpdate) -> Params:
        """The client's trained state: the slice it was sent + ΔP (+ FFA's A)."""
        size = self.sizes[update.client_id]
        assert size is not None
        start = self._sent[update.client_id]
        local = {key: start[key] + update.delta[key] for key in start}
        local.update(self.frozen_a(size))
        return local

    def _secure_merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """The rule as one secure sum of what each client computes alone."""
        secure = self.aggregator.secure
        assert secure is not None
        secure.reset()
        parts = []
        for u in updates:
            local = self._local_state(u)
            share = u.num_examples / self.total_examples
            weight = secure_rule.client_weight(self.rule, local, share, self.scaling)
            parts.append(
                secure_rule.contribution(
                    self.rule, params, u.delta, weight, share, self.scaling
                )
            )
        total = secure(rnd, parts)
        return secure_rule.finish(self.rule, params, total), dict(secure.stats)

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """Round 0: LoRA starts as the identity, so every size sees the same
        features; the probe heads' mean or the class-means head."""
        if task == "class-stats":
            return merge_class_stats(self.aggregator, params, replies)
        if task == "calibrate":
            return merge_calibration(self.aggregator, params, replies)
        return merge_probe_heads(self.aggregator, params, replies)

    def eval_state(self, params: Params) -> tuple[Params, tuple[int, int]]:
        """The full-size (r_max, all layers) state and its shape."""
        return self.client_state(params, self.full), self.full.shape

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if state:
            raise ValueError(
                f"mixed-size LoRA keeps no server state, got keys {sorted(state)}; "
                "was the checkpoint written by another run?"
            )

    # ---------------------------------------------------------- aggregation
    def aggregate(self, state: Params, clients: Sequence[tuple[Params, int]]) -> Params:
        """Merge client states ``(trained state, n_k)`` into the global one.

        Each pair is merged by the rule over its holders only (the pure
        rules of :mod:`fedpeft.aggregation` on the holders' ``{A, B}``)
        and written back into the global pair at ``r_max``; components beyond
        the holders' largest rank keep their global values.
        """
        states = [s for s, _ in clients]
        n = np.array([n for _, n in clients], dtype=np.float64)
        dense = [k for k in state if not _pair_of(k)]
        out = dict(state)
        out.update(
            weighted_mean([{k: s[k] for k in dense} for s in states], n / n.sum())
        )
        w = n
        if self.rule == "hetlora":  # n_k · ‖ΔW_k‖ over each client's whole adapter
            w = hetlora_weights(states, n, rank_scaling=self.scaling)
        for name, (ka, kb) in lora_pairs(self.initial).items():
            holders = [i for i, s in enumerate(states) if kb in s]
            if not holders:
                continue
            sub = [{ka: states[i][ka], kb: states[i][kb]} for i in holders]
            if self.rule == "flexlora":
                merged = flexlora_aggregate(
                    sub, n[holders], alpha=self.alpha, rank_scaling=self.scaling
                )
                out[name] = merged[name]
                continue
            if self.rule == "ffa":
                merged = ffa_lora_aggregate(
                    sub, n[holders], {ka: self.initial[ka]}, rank_scaling=self.scaling
                )
            else:
                merged = hetlora_aggregate(
                    sub, w[holders], rank_scaling=self.scaling, norm_weighting=False
                )
            r_h = merged[ka].shape[0]
            a, b = np.array(out[ka]), np.array(out[kb])  # (r_max, in), (out, r_max)
            a[:r_h] = merged[ka]
            # s(r_h) / s(r_max): the merged columns move to the global rank
            ratio = lora_scaling(1.0, r_h, self.scaling) / lora_scaling(
                1.0, self.r_max, self.scaling
            )
            b[:, :r_h] = merged[kb] * ratio
            out[ka], out[kb] = a, b
        return out
