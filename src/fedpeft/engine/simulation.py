"""The embedded simulation engine: sequential clients sharing one backbone.

One round (DESIGN.md §2): sample clients → each loads the global payload (sent
as real serialized bytes), trains locally and sends its serialized ΔP back →
the server validates every update, aggregates with the strategy, evaluates,
writes a metrics record and a checkpoint. Every random draw comes from a stream
keyed by (seed, round, client), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpeft.aggregation import example_weights, weighted_mean
from fedpeft.client import evaluate_many, fit_head, local_update
from fedpeft.client.batched import ClientJob, supports_batching, train_clients_batched
from fedpeft.client.dp_local import dp_train_clients_batched
from fedpeft.client.flops import FlopMeter
from fedpeft.client.local import finish_update
from fedpeft.config import ClientSection, RunConfig, StrategySection
from fedpeft.rundir.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedpeft.experiment import Experiment
from fedpeft.engine.private import PrivateAggregator, RecordDPLedger
from fedpeft.seeding import stream, torch_generator
from fedpeft.rundir.sink import MetricsSink
from fedpeft.peft.base import AdapterClassifier
from fedpeft.privacy.sampling import poisson_subsample
from fedpeft.strategies import Strategy, build_strategy, sample_clients
from fedpeft.types import ClientUpdate, Params, check_params_like
from fedpeft.wire import deserialize, serialize

logger = logging.getLogger(__name__)

RoundCallback = Callable[[dict[str, Any]], None]


@dataclass
class FederatedResult:
    """Outcome of a federated run."""

    history: list[dict[str, Any]]
    params: Params
    model: AdapterClassifier
    totals: dict[str, float] = field(default_factory=dict)


@dataclass
class FederatedRun:
    """Drives one federated training run of ``experiment``.

    Attributes:
        method: PEFT method (defaults to the config's).
        strategy_cfg / client_cfg: Override the config's sections (baselines do).
        run_dir: Where metrics.jsonl and checkpoints go (None: keep in memory).
        label: Name of the run in records (``"federated"``, ``"full-finetune"``).
    """

    experiment: Experiment
    method: str | None = None
    strategy_cfg: StrategySection | None = None
    client_cfg: ClientSection | None = None
    run_dir: Path | None = None
    label: str = "federated"
    on_round: RoundCallback | None = None
    private: bool = True

    def __post_init__(self) -> None:
        cfg: RunConfig = self.experiment.config
        self.cfg = cfg
        self.strategy_section: StrategySection = self.strategy_cfg or cfg.strategy
        self.client_section: ClientSection = self.client_cfg or cfg.client
        self.model = self.experiment.new_adapter(self.method)
        options = self.strategy_section.model_dump(exclude={"name"})
        self.strategy: Strategy = build_strategy(self.strategy_section.name, **options)
        self.sink = (
            MetricsSink(self.run_dir / "metrics.jsonl") if self.run_dir else None
        )
        total = sum(len(c.train) for c in self.experiment.clients)
        self.privacy = PrivateAggregator.build(cfg, total) if self.private else None
        sizes = [len(c.train) for c in self.experiment.clients]
        self.record_dp = RecordDPLedger.build(cfg, sizes) if self.private else None
        # One meter for the run: each step shape's FLOPs are counted once.
        self.flops = FlopMeter()
        self.batch_clients = cfg.federation.batch_clients and self._batchable()

    def _batchable(self) -> bool:
        if not supports_batching(self.model):
            logger.info(
                "federation.batch_clients: %s has no per-example forward; clients "
                "train one after another",
                type(self.model).__name__,
            )
            return False
        return True

    # ----------------------------------------------------------------- driver
    def run(self, resume: bool = False) -> FederatedResult:
        """Run all rounds (continuing from the last checkpoint if ``resume``)."""
        params, history, start = self._start(resume)
        for rnd in range(start, self.cfg.federation.rounds + 1):
            if self.privacy is not None and self.privacy.budget_exhausted():
                logger.warning(
                    "round %d would exceed the privacy budget; stopping after round %d",
                    rnd,
                    rnd - 1,
                )
                break
            params, record = self.run_round(rnd, params)
            history.append(record)
            self._persist(rnd, params, history, record)
        self.model.load_trainable_state(params)
        return FederatedResult(history, params, self.model, _totals(history))

    def _start(self, resume: bool) -> tuple[Params, list[dict[str, Any]], int]:
        ckpt_dir = self.run_dir / "checkpoint" if self.run_dir else None
        if resume and ckpt_dir is not None:
            ckpt = load_checkpoint(ckpt_dir)
            if ckpt is not None:
                self.strategy.load_state_dict(ckpt.strategy_state)
                if self.privacy is not None:
                    self.privacy.replay(ckpt.round)
                if self.record_dp is not None:
                    self._replay_record_dp(ckpt.history)
                if self.sink:
                    self.sink.reset(ckpt.history)
                logger.info("resuming %s after round %d", self.label, ckpt.round)
                return ckpt.params, list(ckpt.history), ckpt.round + 1
        if self.sink:
            self.sink.reset()
        params, record = self.initial_round()
        history = [record]
        self._persist(0, params, history, record)
        return params, history, 1

    def _replay_record_dp(self, history: list[dict[str, Any]]) -> None:
        """Re-account the DP-SGD steps of finished rounds (resume)."""
        assert self.record_dp is not None
        for record in history[1:]:
            bad = set(record.get("failed_clients", [])) | set(
                record.get("rejected_clients", [])
            )
            for k in record["clients"]:
                if k not in bad:
                    n = len(self.experiment.clients[k].train)
                    self.record_dp.participate(k, n)

    def _persist(
        self,
        rnd: int,
        params: Params,
        history: list[dict[str, Any]],
        record: dict[str, Any],
    ) -> None:
        if self.sink:
            self.sink.write(record)
        if self.run_dir:
            save_checkpoint(
                self.run_dir / "checkpoint",
                Checkpoint(rnd, params, self.strategy.state_dict(), history, {}),
            )
        if self.on_round:
            self.on_round(record)

    # ----------------------------------------------------------- round zero
    def initial_round(self) -> tuple[Params, dict[str, Any]]:
        """Round 0: the initial payload; with ``head_init="probe"`` every client fits
        the head as a linear probe on its features and the server averages the
        heads weighted by n_k (a federated LP-FT warm start)."""
        started = time.perf_counter()
        params = self.model.trainable_state()
        head_init = self.cfg.peft.head_init
        if head_init == "zeros":
            params = {
                k: np.zeros_like(v) if k.startswith("head.") else v
                for k, v in params.items()
            }
        record: dict[str, Any] = {
            "run": self.label,
            "round": 0,
            "clients": [],
            "bytes_up": 0,
            "bytes_down": 0,
        }
        if head_init == "probe":
            params, record = self._probe_round(params, record)
        record.update(self._evaluate(params))
        record["round_seconds"] = time.perf_counter() - started
        return params, record

    def _probe_round(
        self, params: Params, record: dict[str, Any]
    ) -> tuple[Params, dict[str, Any]]:
        c = self.client_section
        down = serialize(params)
        heads, sizes, up = [], [], 0
        self.model.load_trainable_state(params)
        for client in self.experiment.clients:
            head = fit_head(
                self.model,
                client.train,
                c.probe_iters,
                c.probe_l2,
                self.cfg.model.eval_precision,
            )
            up += len(serialize(head))
            heads.append(head)
            sizes.append(len(client.train))
        n = len(heads)
        record.update(clients=list(range(n)), bytes_down=len(down) * n, bytes_up=up)
        if self.privacy is not None:  # the heads, too, only as a secure sum
            mean, stats = self.privacy.weighted_mean(0, heads, sizes)
            record.update(stats)
            if "secagg_bytes_up" in stats:
                record["bytes_up"] = int(stats["secagg_bytes_up"])
                record["bytes_down"] += int(stats["secagg_bytes_down"])
            return {**params, **mean}, record
        return {**params, **weighted_mean(heads, example_weights(sizes))}, record

    # --------------------------------------------------------------- a round
    def run_round(self, rnd: int, params: Params) -> tuple[Params, dict[str, Any]]:
        """One federated round; returns the new global params and its record."""
        t0 = time.perf_counter()
        fed = self.cfg.federation
        selected = self.select(rnd)
        down_blob = serialize(params)
        updates, up_bytes, failed, rejected = self._collect(
            rnd, selected, down_blob, params
        )
        t1 = time.perf_counter()
        agg_metrics: dict[str, float] = {}
        private: dict[str, Any] = {}
        if self.privacy is not None and (updates or self.privacy.dp is not None):
            # The server only ever sees the (secure, noised) mean.
            pseudo, private = self.privacy.aggregate(rnd, params, updates)
            params, agg_metrics = self.strategy.aggregate(rnd, params, [pseudo])
        elif updates:
            params, agg_metrics = self.strategy.aggregate(rnd, params, updates)
        else:
            logger.warning(
                "round %d: no valid client update; global model unchanged", rnd
            )
        t2 = time.perf_counter()
        record: dict[str, Any] = {
            "run": self.label,
            "round": rnd,
            "clients": [int(k) for k in selected],
            "failed_clients": failed,
            "rejected_clients": rejected,
            "bytes_down": len(down_blob) * len(selected),
            "bytes_up": up_bytes,
            "bytes_down_per_client": len(down_blob),
            "bytes_up_per_client": up_bytes / max(len(updates), 1),
            **_client_summary(updates),
            **{f"agg_{k}": v for k, v in agg_metrics.items()},
            **private,
        }
        if self.record_dp is not None:
            for u in updates:
                self.record_dp.participate(u.client_id, u.num_examples)
            record.update(self.record_dp.metrics())
        if "secagg_bytes_up" in private:  # what really travelled: the protocol's
            n = max(len(updates), 1)  # messages instead of the plain ΔP blobs
            record["bytes_up"] = int(private["secagg_bytes_up"])
            record["bytes_down"] += int(private["secagg_bytes_down"])
            record["bytes_up_per_client"] = private["secagg_bytes_up"] / n
        if rnd % fed.eval_every == 0 or rnd == fed.rounds:
            record.update(self._evaluate(params))
        t3 = time.perf_counter()
        record.update(
            train_seconds=t1 - t0,
            aggregate_seconds=t2 - t1,
            eval_seconds=t3 - t2,
            round_seconds=t3 - t0,
        )
        return params, record

    def select(self, rnd: int) -> np.ndarray:
        """Round ``rnd``'s participants (seeded by (seed, round))."""
        fed = self.cfg.federation
        rng = stream(self.cfg.seed, "sample", rnd)
        if fed.sampling == "poisson":
            return poisson_subsample(
                fed.num_clients, self.strategy_section.fraction_fit, rng
            )
        return sample_clients(
            fed.num_clients,
            self.strategy_section.fraction_fit,
            self.strategy_section.min_fit_clients,
            rng,
        )

    def _collect(
        self, rnd: int, selected: np.ndarray, down_blob: bytes, params: Params
    ) -> tuple[list[ClientUpdate], int, list[int], list[int]]:
        """Run the selected clients; drop the ones that fail or send bad updates."""
        extra = self.strategy.client_config(rnd)
        updates: list[ClientUpdate] = []
        failed: list[int] = []
        rejected: list[int] = []
        up_bytes = 0
        errors: list[BaseException] = []
        batched = self._train_batched(rnd, selected, down_blob, extra)
        for k in selected:
            try:
                if batched is not None:
                    update = batched[int(k)]
                else:
                    update = self._train_one(rnd, int(k), down_blob, extra)
            except (RuntimeError, ValueError, MemoryError) as err:
                logger.warning("round %d: client %d failed (%s); dropped", rnd, k, err)
                failed.append(int(k))
                errors.append(err)
                continue
            blob = serialize(update.delta)
            up_bytes += len(blob)
            received = ClientUpdate(
                update.client_id, deserialize(blob), update.num_examples, update.metrics
            )
            try:
                check_params_like(params, received.delta, what=f"client {k}'s update")
            except ValueError as err:
                logger.warning("round %d: %s; update rejected", rnd, err)
                rejected.append(int(k))
                continue
            updates.append(received)
        if errors and len(failed) == len(selected):
            raise RuntimeError(
                f"round {rnd}: every selected client failed"
            ) from errors[0]
        return updates, up_bytes, failed, rejected

    def _train_one(
        self, rnd: int, k: int, down_blob: bytes, extra: Mapping[str, Any]
    ) -> ClientUpdate:
        """Client k's local round on its own (the sequential engine)."""
        cfg, c = self.cfg, self.client_section
        client = self.experiment.clients[k]
        return local_update(
            k,
            self.model,
            deserialize(down_blob),
            client.train,
            client.val,
            c,
            stream(cfg.seed, "client", rnd, k),
            proximal_mu=float(extra.get("proximal_mu", 0.0)),
            precision=cfg.model.precision,
            eval_precision=cfg.model.eval_precision,
            eval_batch_size=cfg.federation.eval_batch_size,
            record_dp=self.record_dp.dp if self.record_dp else None,
            dp_generator=self._dp_generator(rnd, k),
            flops=self.flops,
        )

    def _dp_generator(self, rnd: int, k: int) -> torch.Generator:
        """Client k's DP-SGD noise stream in round ``rnd`` (batched or not)."""
        return torch_generator(stream(self.cfg.seed, "dp", rnd, 10**6 + k))

    def _train_batched(
        self,
        rnd: int,
        selected: np.ndarray,
        down_blob: bytes,
        extra: Mapping[str, Any],
    ) -> dict[int, ClientUpdate] | None:
        """All selected clients' local rounds together (client batching), or
        ``None`` to train them one after another (not enabled, or it failed)."""
        if not self.batch_clients or len(selected) == 0:
            return None
        cfg, c = self.cfg, self.client_section
        jobs = [
            ClientJob(
                int(k),
                deserialize(down_blob),  # every client decodes its own copy
                self.experiment.clients[int(k)].train,
                stream(cfg.seed, "client", rnd, int(k)),
            )
            for k in selected
        ]
        dp = self.record_dp.dp if self.record_dp else None
        try:
            if dp is not None:  # record-level DP-SGD: each client its own noise
                trained = dp_train_clients_batched(
                    self.model,
                    jobs,
                    [self._dp_generator(rnd, j.client_id) for j in jobs],
                    c,
                    dp,
                    precision=cfg.model.precision,
                    bucket_size=cfg.federation.bucket_size,
                )
            else:
                trained = train_clients_batched(
                    self.model,
                    jobs,
                    c,
                    proximal_mu=float(extra.get("proximal_mu", 0.0)),
                    precision=cfg.model.precision,
                    flops=self.flops,
                    bucket_size=cfg.federation.bucket_size,
                    bucket_threads=cfg.federation.bucket_threads,
                )
        except (RuntimeError, ValueError, MemoryError) as err:
            logger.warning(
                "round %d: batched local training failed (%s); training the "
                "clients one after another",
                rnd,
                err,
            )
            return None
        out: dict[int, ClientUpdate] = {}
        for job, (state, stats) in zip(jobs, trained, strict=True):
            self.model.load_trainable_state(state)
            out[job.client_id] = finish_update(
                job.client_id,
                self.model,
                job.start,
                stats,
                len(job.data),
                self.experiment.clients[job.client_id].val,
                cfg.federation.eval_batch_size,
                cfg.model.eval_precision,
            )
        return out

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, params: Params) -> dict[str, Any]:
        """Global test metrics and the global model's accuracy on each client's
        validation split (mean and 10th percentile across clients)."""
        self.model.load_trainable_state(params)
        fed, prec = self.cfg.federation, self.cfg.model.eval_precision
        vals = [c.val for c in self.experiment.clients if len(c.val)]
        test, *checks = evaluate_many(  # one length-sorted pass over all
            self.model, [self.experiment.test, *vals], fed.eval_batch_size, prec
        )
        out: dict[str, Any] = test.as_dict("test_")
        accs = [check.accuracy for check in checks]
        if accs:
            out["client_val_accuracy_mean"] = float(np.mean(accs))
            out["client_val_accuracy_p10"] = float(np.percentile(accs, 10))
        return out


def _client_summary(updates: list[ClientUpdate]) -> dict[str, float]:
    """Means of the clients' own metrics after local training (``local_*``)."""
    if not updates:
        return {}
    keys: set[str] = set.intersection(*(set(u.metrics) for u in updates))
    out = {
        f"local_{k}_mean": float(np.mean([u.metrics[k] for u in updates]))
        for k in sorted(keys)
    }
    out["client_flops_total"] = float(sum(u.metrics.get("flops", 0.0) for u in updates))
    out["train_examples_total"] = float(
        sum(u.metrics.get("train_examples", 0.0) for u in updates)
    )
    out["train_seconds_total"] = float(
        sum(u.metrics.get("train_seconds", 0.0) for u in updates)
    )
    return out


def _totals(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {
        "bytes_up": float(sum(r.get("bytes_up", 0) for r in history)),
        "bytes_down": float(sum(r.get("bytes_down", 0) for r in history)),
        "client_flops": float(sum(r.get("client_flops_total", 0.0) for r in history)),
        "train_examples": float(
            sum(r.get("train_examples_total", 0.0) for r in history)
        ),
        "train_seconds": float(sum(r.get("train_seconds_total", 0.0) for r in history)),
    }
