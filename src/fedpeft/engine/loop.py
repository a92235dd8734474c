"""The round loop: one for every server algorithm, client algorithm and runtime.

::

    round 0   params = server's initial state
              (warm start) probe / class-stats instructions ─► runtime
                           ─► heads / statistics ─► server.merge_warm_start
    round t   selected  = seeded sample of server.eligible
              instructions = server.instructions(t, "fit", params, selected)
              replies   = runtime.run(instructions)        # real bytes both ways
              accepted  = screen(replies)                  # bad updates dropped
              params    = server.merge(t, params, accepted) # plain / secure / DP mean
              evaluate; metrics.jsonl; checkpoint

Every random draw comes from a stream keyed by (seed, kind, round, client), so
a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedpeft.aggregation.lda import GRAM_FLAG
from fedpeft.messages import Instruction, Reply, Task, reply_layout
from fedpeft.rundir.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedpeft.rundir.sink import MetricsSink
from fedpeft.seeding import stream
from fedpeft.server.aggregators import Metrics
from fedpeft.server.record_dp import RecordDPLedger
from fedpeft.server.screening import screen_updates
from fedpeft.server.warm_start import WarmStart
from fedpeft.server.wrapped import Server as Server
from fedpeft.strategies import select_clients
from fedpeft.types import ClientUpdate, Params

logger = logging.getLogger(__name__)

Record = dict[str, Any]


class Runtime(Protocol):
    """Delivers instructions to clients and brings their replies back."""

    def run(self, instructions: Sequence[Instruction]) -> list[Reply]: ...


Evaluate = Callable[[Params, "tuple[int, int] | None"], Record]


@dataclass(frozen=True)
class LoopSettings:
    """The loop's share of the run config."""

    rounds: int
    seed: int
    num_clients: int
    fraction: float
    min_clients: int
    poisson: bool = False
    eval_every: int = 1
    warm_start: WarmStart | None = "probe"
    update_norm_ratio: float = 0.0
    label: str = "federated"
    shipped_bytes: int = 0
    """Bytes every client downloads once before round 1 (FedSP's auxiliary
    model), counted in round 0."""


@dataclass
class LoopResult:
    """Outcome of a run: the round records and the final global state."""

    history: list[Record]
    params: Params
    totals: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    """Time spent in the loop, over every session of a resumed run."""


@dataclass
class RoundLoop:
    """Drives the rounds of one federated run (module docstring).

    Attributes:
        server / runtime: The server algorithm and how messages travel.
        evaluate: Test (and client validation) metrics of a global state.
        initial: The global state before any round (round 0 refines it).
        settings: Rounds, sampling, evaluation cadence, update bound.
        run_dir: Where metrics.jsonl and checkpoints go (None: in memory).
        record_dp: The record-level DP ledger, when DP-SGD runs in clients.
        on_round: Called with every round's record.
    """

    server: Server
    runtime: Runtime
    evaluate: Evaluate
    initial: Params
    settings: LoopSettings
    run_dir: Path | None = None
    record_dp: RecordDPLedger | None = None
    on_round: Callable[[Record], None] | None = None

    def __post_init__(self) -> None:
        self.sink = (
            MetricsSink(self.run_dir / "metrics.jsonl") if self.run_dir else None
        )
        self._clock = (time.perf_counter(), 0.0)  # (this session's start, before it)

    def run(self, resume: bool = False) -> LoopResult:
        """All rounds, continuing after the last checkpoint when ``resume``."""
        self._clock = (time.perf_counter(), 0.0)
        params, history, start = self._start(resume)
        for rnd in range(start, self.settings.rounds + 1):
            if self.server.aggregator.budget_exhausted():
                logger.warning(
                    "round %d would exceed the privacy budget; stopping after round %d",
                    rnd,
                    rnd - 1,
                )
                break
            params, record = self.run_round(rnd, params)
            history.append(record)
            self._persist(rnd, params, history, record)
        return LoopResult(history, params, totals(history), self._wall())

    # ------------------------------------------------------------ start
    def _start(self, resume: bool) -> tuple[Params, list[Record], int]:
        ckpt_dir = self.run_dir / "checkpoint" if self.run_dir else None
        ckpt = load_checkpoint(ckpt_dir) if resume and ckpt_dir else None
        if ckpt is not None:
            self.server.load_state_dict(ckpt.strategy_state)
            self.server.aggregator.replay(ckpt.round)
            if self.record_dp is not None:
                self.record_dp.replay(ckpt.history)
            if self.sink:
                self.sink.reset(ckpt.history)
            self._clock = (self._clock[0], float(ckpt.extra.get("wall_seconds", 0.0)))
            logger.info("resuming %s after round %d", self.settings.label, ckpt.round)
            return ckpt.params, list(ckpt.history), ckpt.round + 1
        if self.sink:
            self.sink.reset()
        params, record = self.initial_round()
        self._persist(0, params, [record], record)
        return params, [record], 1

    def initial_round(self) -> tuple[Params, Record]:
        """Round 0: the initial state, with the warm start: every eligible
        client fits the head as a linear probe on its own features and the
        server takes their n_k-weighted mean (``probe``), or every client sends
        per-class feature statistics and the server builds the head the pooled
        data would give (``class-means``); securely when configured."""
        started = time.perf_counter()
        params = self.initial
        record: Record = {"run": self.settings.label, "round": 0, "clients": []}
        shipped = self.settings.shipped_bytes * len(self.server.eligible)
        record.update(bytes_up=0, bytes_down=shipped)
        if shipped:
            record["model_bytes_down"] = shipped
        if self.settings.warm_start is not None:
            task: Task = (
                "probe" if self.settings.warm_start == "probe" else "class-stats"
            )
            eligible = self.server.eligible
            passes: list[Task] = [task]
            if task == "class-stats":
                passes.append("calibrate")
            failed: set[int] = set()
            for kind in passes:
                ins = self.server.instructions(0, kind, params, eligible)
                if kind == "class-stats" and self.settings.warm_start == "lda":
                    ins = [replace(i, config={**i.config, GRAM_FLAG: 1.0}) for i in ins]
                replies = self.runtime.run(ins)
                heads = [r.update for r in replies if r.update is not None]
                params, stats = self.server.merge_warm_start(kind, params, heads)
                failed.update(r.client_id for r in replies if r.update is None)
                part: Record = {
                    "bytes_down": sum(r.bytes_down for r in replies),
                    "bytes_up": sum(r.bytes_up for r in replies),
                }
                _secagg_bytes(part, stats, len(heads))
                record["bytes_down"] += part["bytes_down"]
                record["bytes_up"] += part["bytes_up"]
                record.update(
                    {k: v for k, v in stats.items() if not k.startswith("secagg_bytes")}
                )
            record.update(clients=eligible, failed_clients=sorted(failed))
        record.update(self._evaluate(params))
        record["round_seconds"] = time.perf_counter() - started
        return params, record

    # ------------------------------------------------------------ a round
    def select(self, rnd: int) -> list[int]:
        """Round ``rnd``'s participants among the eligible (seeded by the round)."""
        s = self.settings
        return select_clients(
            self.server.eligible,
            s.num_clients,
            s.fraction,
            s.min_clients,
            stream(s.seed, "sample", rnd),
            poisson=s.poisson,
        )

    def next_merge(self, task: str, rnd: int) -> tuple[str, int, list[int]] | None:
        """The merge after the one of ``(task, rnd)`` and its clients, as far
        as they are fixed in advance (round ``t``'s sample is drawn from the
        seed and ``t``); ``None`` after the last round. A remote runtime runs
        the first secure-sum stages of that merge ahead
        (:mod:`fedpeft.remote.secure_sum`)."""
        if task == "class-stats":
            return "calibrate", 0, list(self.server.eligible)
        following = 1 if task in ("probe", "calibrate") else rnd + 1
        if following > self.settings.rounds:
            return None
        return "fit", following, self.select(following)

    def run_round(self, rnd: int, params: Params) -> tuple[Params, Record]:
        """One federated round; the new global state and the round's record."""
        t0 = time.perf_counter()
        selected = self.select(rnd)
        instructions = self.server.instructions(rnd, "fit", params, selected)
        replies = self.runtime.run(instructions)
        references = {ins.client_id: reply_layout(ins.payload) for ins in instructions}
        updates = [r.update for r in replies if r.update is not None]
        screened = screen_updates(updates, references, self.settings.update_norm_ratio)
        for why in screened.rejected.values():
            logger.warning("round %d: %s; update rejected", rnd, why)
        failed = [r.client_id for r in replies if r.update is None]
        if selected and len(failed) == len(selected):
            reasons = "; ".join(sorted({r.error for r in replies}))
            raise RuntimeError(f"round {rnd}: every selected client failed ({reasons})")
        t1 = time.perf_counter()
        params, agg = self.server.merge(rnd, params, screened.accepted)
        if not screened.accepted:
            logger.warning("round %d: no valid client update", rnd)
        t2 = time.perf_counter()
        record = self._record(rnd, selected, replies, screened.accepted, agg)
        record["failed_clients"] = failed
        record["rejected_clients"] = sorted(screened.rejected)
        record["update_norm_ratio_max"] = screened.max_norm_ratio
        s = self.settings
        if rnd % s.eval_every == 0 or rnd == s.rounds:
            record.update(self._evaluate(params))
        t3 = time.perf_counter()
        record.update(
            train_seconds=t1 - t0,
            aggregate_seconds=t2 - t1,
            eval_seconds=t3 - t2,
            round_seconds=t3 - t0,
        )
        return params, record

    def _record(
        self,
        rnd: int,
        selected: Sequence[int],
        replies: Sequence[Reply],
        accepted: Sequence[ClientUpdate],
        agg: Metrics,
    ) -> Record:
        down = [r.bytes_down for r in replies]
        up = sum(r.bytes_up for r in replies)
        record: Record = {
            "run": self.settings.label,
            "round": rnd,
            "clients": list(selected),
            "accepted_clients": [u.client_id for u in accepted],
            "bytes_down": sum(down),
            "bytes_up": up,
            "bytes_down_per_client": max(down, default=0),
            "bytes_up_per_client": up / max(len(accepted), 1),
            **client_summary(accepted),
            **agg,
        }
        if self.record_dp is not None:
            for u in accepted:
                self.record_dp.participate(u.client_id, u.num_examples)
            record.update(self.record_dp.metrics())
        _secagg_bytes(record, agg, len(accepted))
        return record

    def _evaluate(self, params: Params) -> Record:
        state, shape = self.server.eval_state(params)
        return self.evaluate(state, shape)

    def _persist(
        self, rnd: int, params: Params, history: list[Record], record: Record
    ) -> None:
        if self.sink:
            self.sink.write(record)
        if self.run_dir:
            save_checkpoint(
                self.run_dir / "checkpoint",
                Checkpoint(
                    rnd,
                    params,
                    self.server.state_dict(),
                    history,
                    {"wall_seconds": self._wall()},
                ),
            )
        if self.on_round:
            self.on_round(record)

    def _wall(self) -> float:
        started, before = self._clock
        return before + time.perf_counter() - started


def _secagg_bytes(record: Record, stats: Metrics, senders: int) -> None:
    """What really travelled under secure aggregation: the protocol's messages
    instead of the plain ΔP blobs."""
    if "secagg_bytes_up" not in stats:
        return
    record["bytes_up"] = int(stats["secagg_bytes_up"])
    record["bytes_down"] += int(stats["secagg_bytes_down"])
    if "bytes_up_per_client" in record:
        record["bytes_up_per_client"] = stats["secagg_bytes_up"] / max(senders, 1)


def client_summary(updates: Sequence[ClientUpdate]) -> dict[str, float]:
    """Means of the clients' own metrics after local training (``local_*``)."""
    if not updates:
        return {}
    keys: set[str] = set.intersection(*(set(u.metrics) for u in updates))
    out = {
        f"local_{k}_mean": float(np.mean([u.metrics[k] for u in updates]))
        for k in sorted(keys)
    }
    for key, metric in (
        ("client_flops_total", "flops"),
        ("train_examples_total", "train_examples"),
        ("train_seconds_total", "train_seconds"),
    ):
        out[key] = float(sum(u.metrics.get(metric, 0.0) for u in updates))
    return out


def totals(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Run totals over all records: bytes, client FLOPs, examples, seconds."""
    keys = {
        "bytes_up": "bytes_up",
        "bytes_down": "bytes_down",
        "client_flops": "client_flops_total",
        "train_examples": "train_examples_total",
        "train_seconds": "train_seconds_total",
    }
    return {
        name: float(sum(r.get(key, 0) for r in history)) for name, key in keys.items()
    }
