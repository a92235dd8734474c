"""Federated LoRA with a different adapter size on every client.

Device allocation (:mod:`fedpeft.devices`) gives each client a LoRA size, a rank
and a number of tuned top layers, or excludes it. This engine trains such a
population on one shared frozen backbone and merges the updates with a
heterogeneous-rank rule from :mod:`fedpeft.aggregation.lora`.

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
  (:func:`~fedpeft.aggregation.lora.flexlora_distribute`).
* ``ffa`` (FFA-LoRA, Sun et al. 2024): every A stays at its seeded initial value
  and is never sent; clients train and send only B, averaged per column over
  the clients holding that column.
* ``fedavg``: HetLoRA's padding with plain n_k weights; with equal sizes this is
  FedAvg of A and B.

FLoRA (exact stacking) is not offered: it needs the stacked product merged into
the frozen weights every round, and the backbone is shared, read-only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedpeft.aggregation.lora import (
    LORA_A,
    LORA_B,
    LORA_DELTA,
    ffa_lora_aggregate,
    flexlora_aggregate,
    flexlora_distribute,
    hetlora_aggregate,
    hetlora_truncate,
    hetlora_weights,
    lora_pairs,
    lora_scaling,
)
from fedpeft.aggregation.mean import example_weights, weighted_mean
from fedpeft.client import evaluate, evaluate_many, fit_head, local_update
from fedpeft.config import parse_lora_size
from fedpeft.devices import (
    AdapterOption,
    Allocation,
    BackboneDims,
    CostFn,
    DeviceProfile,
    allocate,
    analytic_cost_fn,
    draw_profiles,
    excluded_by_fixed,
    lora_option,
    round_time,
)
from fedpeft.experiment import Experiment
from fedpeft.seeding import stream
from fedpeft.peft.base import AdapterClassifier
from fedpeft.strategies import sample_size
from fedpeft.types import Params, check_params_like
from fedpeft.wire import deserialize, serialize

logger = logging.getLogger(__name__)

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


@dataclass
class HeteroResult:
    """Outcome of a heterogeneous-size run."""

    history: list[dict[str, Any]]
    params: Params
    client_val_accuracy: list[float] = field(default_factory=list)


def _pair_of(key: str) -> str:
    """The pair name (``lora_delta``) of an A or B key; dense keys map to ''."""
    for part in (LORA_A, LORA_B, LORA_DELTA):
        if part in key:
            return key.replace(part, LORA_DELTA)
    return ""


class HeteroLoraRun:
    """Federated LoRA where every client trains the size it was allocated.

    Args:
        experiment: The loaded backbone, data and clients.
        sizes: One entry per client: its :class:`LoraSize`, or ``None`` for a
            client the allocation excluded (never sampled, still evaluated).
        rule: One of :data:`HETERO_RULES`.
        on_round: Called with each round's record.
    """

    def __init__(
        self,
        experiment: Experiment,
        sizes: Sequence[LoraSize | None],
        rule: str,
        *,
        on_round: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if rule not in HETERO_RULES:
            raise ValueError(f"rule={rule!r} is unknown; use one of {HETERO_RULES}")
        if len(sizes) != len(experiment.clients):
            raise ValueError(
                f"sizes has {len(sizes)} entries for {len(experiment.clients)} "
                "clients; give one LoraSize (or None) per client"
            )
        self.eligible = [k for k, s in enumerate(sizes) if s is not None]
        if not self.eligible:
            raise ValueError("every client is excluded; nothing can train")
        self.exp, self.cfg, self.rule = experiment, experiment.config, rule
        self.sizes = list(sizes)
        self.on_round = on_round
        num_layers = experiment.backbone.num_layers
        ranks = [s.rank for s in sizes if s is not None]
        self.r_max = max(ranks)
        self.full = LoraSize(self.r_max, 0)
        self._models: dict[LoraSize, AdapterClassifier] = {}
        for size in {s for s in sizes if s is not None}:
            if size.layers > num_layers:
                raise ValueError(
                    f"{size.label}: the backbone has only {num_layers} layers"
                )
        self.global_model = self._model(self.full)
        self.initial = self.global_model.trainable_state()
        self.initial.update(self._frozen_a(self.global_model))  # FFA's shared A
        self.alpha = float(self.cfg.peft.alpha)
        self.scaling = self.cfg.peft.rank_scaling

    # ----------------------------------------------------------- models
    def _model(self, size: LoraSize) -> AdapterClassifier:
        """One adapter module per size, sharing the backbone; FFA freezes A."""
        if size not in self._models:
            model = self.exp.new_adapter("lora", rank=size.rank, layers=size.layers)
            if self.rule == "ffa":
                for name, p in model.named_parameters():
                    if LORA_A in name:
                        p.requires_grad_(False)
            self._models[size] = model
        return self._models[size]

    @staticmethod
    def _frozen_a(model: AdapterClassifier) -> Params:
        return {
            n: p.detach().cpu().numpy().copy()
            for n, p in model.named_parameters()
            if LORA_A in n and not p.requires_grad
        }

    @staticmethod
    def _set_a(model: AdapterClassifier, a: Params) -> None:
        """Write frozen A tensors (FFA-LoRA) into ``model``."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in a.items():
                params[name].copy_(torch.from_numpy(np.asarray(value)))

    # ------------------------------------------------------- global state
    def _start(self) -> Params:
        """Global state at round 0: seeded A, zero B, head per config."""
        state: Params = dict(self.initial)
        if self.cfg.peft.head_init == "zeros":
            state = {
                k: np.zeros_like(v) if k.startswith("head.") else v
                for k, v in state.items()
            }
        if self.rule == "flexlora":
            state = flexlora_aggregate(
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
        model = self._model(size)
        keys = model.trainable_state_like()
        factors = self._factors(state, size.rank)
        return {k: factors[k] for k in keys}

    # ---------------------------------------------------------- aggregation
    def aggregate(self, state: Params, clients: Sequence[tuple[Params, int]]) -> Params:
        """Merge client states ``(trained state, n_k)`` into the global one.

        Each pair is merged by the rule over its holders only (the pure
        functions of :mod:`fedpeft.aggregation.lora` on the holders' ``{A, B}``)
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

    # --------------------------------------------------------------- rounds
    def run(self) -> HeteroResult:
        """All rounds: a round-0 head warm start (if configured), then training."""
        state, record = self._round_zero(self._start())
        history = [record]
        if self.on_round:
            self.on_round(record)
        for rnd in range(1, self.cfg.federation.rounds + 1):
            state, record = self.run_round(rnd, state)
            history.append(record)
            if self.on_round:
                self.on_round(record)
        accs = self._client_accuracy(state)
        return HeteroResult(history, state, accs)

    def _round_zero(self, state: Params) -> tuple[Params, dict[str, Any]]:
        record: dict[str, Any] = {"round": 0, "clients": [], "bytes_up": 0}
        if self.cfg.peft.head_init == "probe":  # LoRA starts as the identity, so
            model = self._load_global(state)  # every size sees the same features
            c = self.cfg.client
            heads = [
                fit_head(
                    model,
                    self.exp.clients[k].train,
                    c.probe_iters,
                    c.probe_l2,
                    self.cfg.model.eval_precision,
                )
                for k in self.eligible
            ]
            sizes = [len(self.exp.clients[k].train) for k in self.eligible]
            state = {**state, **weighted_mean(heads, example_weights(sizes))}
            record.update(
                clients=list(self.eligible),
                bytes_up=sum(len(serialize(h)) for h in heads),
            )
        record.update(self._evaluate(state))
        return state, record

    def sample(self, rnd: int) -> list[int]:
        """``round(fraction_fit · N)`` clients from the eligible ones (seeded)."""
        fed, strat = self.cfg.federation, self.cfg.strategy
        m = sample_size(fed.num_clients, strat.fraction_fit, strat.min_fit_clients)
        m = min(m, len(self.eligible))
        rng = stream(self.cfg.seed, "sample", rnd)
        return sorted(int(k) for k in rng.choice(self.eligible, m, replace=False))

    def run_round(self, rnd: int, state: Params) -> tuple[Params, dict[str, Any]]:
        t0 = time.perf_counter()
        cfg = self.cfg
        trained: list[tuple[Params, int]] = []
        down = up = 0
        flops = 0.0
        failed: list[int] = []
        selected = self.sample(rnd)
        for k in selected:
            size = self.sizes[k]
            assert size is not None
            model = self._model(size)
            start = self.client_state(state, size)
            blob = serialize(start)
            down += len(blob)
            if self.rule == "ffa":  # the shared frozen A, first r rows
                self._set_a(
                    model,
                    {a: self.initial[a][: size.rank] for a in self._frozen_a(model)},
                )
            client = self.exp.clients[k]
            try:
                update = local_update(
                    k,
                    model,
                    deserialize(blob),
                    client.train,
                    client.val,
                    cfg.client,
                    stream(cfg.seed, "client", rnd, k),
                    precision=cfg.model.precision,
                    eval_precision=cfg.model.eval_precision,
                    eval_batch_size=cfg.federation.eval_batch_size,
                )
                up_blob = serialize(update.delta)
                received = deserialize(up_blob)
                check_params_like(start, received, what=f"client {k}'s update")
            except (RuntimeError, ValueError, MemoryError) as err:
                logger.warning("round %d: client %d dropped (%s)", rnd, k, err)
                failed.append(k)
                continue
            up += len(up_blob)
            flops += update.metrics.get("flops", 0.0)
            local = {key: start[key] + received[key] for key in start}
            if self.rule == "ffa":
                local.update(self._frozen_a(model))
            trained.append((local, update.num_examples))
        t1 = time.perf_counter()
        if trained:
            state = self.aggregate(state, trained)
        record: dict[str, Any] = {
            "round": rnd,
            "clients": [k for k in selected if k not in failed],
            "failed_clients": failed,
            "bytes_down": down,
            "bytes_up": up,
            "client_flops_total": flops,
            "train_seconds": t1 - t0,
        }
        record.update(self._evaluate(state))
        return state, record

    # ----------------------------------------------------------- evaluation
    def _load_global(self, state: Params) -> AdapterClassifier:
        self.global_model.load_trainable_state(self.client_state(state, self.full))
        if self.rule == "ffa":
            self._set_a(
                self.global_model,
                {a: self.initial[a] for a in self._frozen_a(self.global_model)},
            )
        return self.global_model

    def _evaluate(self, state: Params) -> dict[str, Any]:
        model = self._load_global(state)
        fed, prec = self.cfg.federation, self.cfg.model.eval_precision
        return dict(
            evaluate(model, self.exp.test, fed.eval_batch_size, prec).as_dict("test_")
        )

    def _client_accuracy(self, state: Params) -> list[float]:
        """The final global model's accuracy on each client's validation split."""
        model = self._load_global(state)
        fed, prec = self.cfg.federation, self.cfg.model.eval_precision
        vals = [c.val for c in self.exp.clients]
        results = evaluate_many(model, vals, fed.eval_batch_size, prec)
        return [r.accuracy for r in results]


# ------------------------------------------------------------- allocation
@dataclass(frozen=True)
class DevicePlan:
    """Who trains which LoRA size, and what the device model predicts.

    Attributes:
        menu: The LoRA sizes on offer, smallest first.
        sizes: Per client its size, or ``None`` when excluded.
        allocation: The policy's decision with predicted memory, time, bytes.
        excluded_by_fixed: Clients the largest size, given to everyone, would
            exclude.
    """

    menu: tuple[LoraSize, ...]
    sizes: tuple[LoraSize | None, ...]
    allocation: Allocation
    excluded_by_fixed: int
    profiles: tuple[DeviceProfile, ...]
    options: tuple[AdapterOption, ...]
    cost_fn: CostFn

    def predicted_seconds(self, client: int) -> dict[str, float]:
        """Predicted round time of every menu size on ``client``'s device."""
        return {
            size.label: round_time(self.cost_fn(client, option), self.profiles[client])
            for size, option in zip(self.menu, self.options, strict=True)
        }


def plan_devices(experiment: Experiment) -> DevicePlan:
    """Draw the device profiles and allocate LoRA sizes (``[devices]`` config).

    The analytic cost model (:mod:`fedpeft.devices.cost`) predicts each client's
    memory, FLOPs and bytes for each menu size from the backbone's dimensions,
    the client's number of examples and the local-training settings.
    """
    cfg = experiment.config
    d = cfg.devices
    if d.profiles is None:
        raise ValueError("devices.profiles is not set; there is nothing to allocate")
    menu = tuple(LoraSize(*parse_lora_size(entry)) for entry in d.menu)
    backbone = experiment.backbone
    dims = BackboneDims.from_hf_config(backbone.model.config, backbone.num_parameters)
    head = (backbone.hidden_size + 1) * experiment.num_classes
    options = [
        lora_option(dims, s.rank, layers=s.layers, head_params=head) for s in menu
    ]
    profiles = draw_profiles(d.profiles, cfg.federation.num_clients, seed=cfg.seed)
    cost_fn = analytic_cost_fn(
        dims,
        batch_size=cfg.client.batch_size,
        seq_len=cfg.model.max_length,
        num_examples=[len(c.train) for c in experiment.clients],
        epochs=max(cfg.client.local_epochs, 1),
    )
    allocation = allocate(
        d.policy,
        profiles,
        options,
        cost_fn,
        deadline_s=d.deadline_s,
        fixed_index=d.fixed_index,
    )
    sizes = tuple(
        menu[c.menu_index] if c.menu_index is not None else None
        for c in allocation.clients
    )
    fixed = excluded_by_fixed(profiles, options, cost_fn, deadline_s=d.deadline_s)
    return DevicePlan(
        menu, sizes, allocation, fixed, tuple(profiles), tuple(options), cost_fn
    )
