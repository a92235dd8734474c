"""A federated run in this process: the round loop with the embedded runtime.

:class:`FederatedRun` assembles from an :class:`Experiment` and its config the
server algorithm (one adapter layout, or mixed LoRA sizes), the aggregator
(plain, secure, DP), the gradient client, the embedded runtime and the
evaluator, and hands them to :class:`~fedpeft.engine.loop.RoundLoop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.aggregation.lora import LORA_A
from fedpeft.blackbox.client import BlackBoxClient
from fedpeft.blackbox.server import BlackBoxServer
from fedpeft.blackbox.service import ModelService
from fedpeft.client.algorithm import (
    BatchingClient,
    ClientData,
    GradientClient,
    TrainSettings,
)
from fedpeft.client.attacks import AttackClient, choose_attackers, poisoned_shard
from fedpeft.client.evaluate import evaluate_many
from fedpeft.client.flops import FlopMeter
from fedpeft.client.pool import AdapterPool, Shape
from fedpeft.config import ClientSection, ConfigError, StrategySection
from fedpeft.engine.embedded import EmbeddedRuntime
from fedpeft.engine.loop import (
    LoopResult,
    LoopSettings,
    Record,
    RoundLoop,
    Runtime,
    Server,
)
from fedpeft.experiment import Experiment
from fedpeft.fedsp.adapters import fedsp_adapters
from fedpeft.fedsp.client import ModelStageClient
from fedpeft.fedsp.recipe import Auxiliary, auxiliary_for
from fedpeft.fedsp.server import ServerPromptStep, SteppedServer
from fedpeft.peft.base import AdapterClassifier
from fedpeft.peft.blackbox.config import BlackBoxConfig
from fedpeft.peft.lora.config import LoraConfig
from fedpeft.server.aggregators import Aggregator, PlainAggregator, SecureSum
from fedpeft.server.build import SecureSumFactory, build_aggregator
from fedpeft.server.mixed_lora import HETERO_RULES, LoraSize, MixedLoraServer
from fedpeft.server.record_dp import RecordDPLedger
from fedpeft.server.scaffold import ScaffoldServer
from fedpeft.server.uniform import UniformServer
from fedpeft.strategies import build_strategy
from fedpeft.types import Params

logger = logging.getLogger(__name__)


@dataclass
class FederatedResult:
    """Outcome of a federated run."""

    history: list[dict[str, Any]]
    params: Params
    model: AdapterClassifier
    totals: dict[str, float] = field(default_factory=dict)
    client_val_accuracy: dict[int, float] = field(default_factory=dict)
    wall_seconds: float = 0.0


@dataclass
class Evaluator:
    """Test metrics of a global state, and its accuracy on every client's
    validation split (mean and 10th percentile), in one length-sorted pass."""

    pool: AdapterPool
    experiment: Experiment
    auxiliary: AdapterPool | None = None
    client_accuracy: dict[int, float] = field(default_factory=dict)

    def __call__(self, state: Params, shape: Shape) -> Record:
        model = self.pool(shape)
        model.load_trainable_state(state)
        cfg = self.experiment.config
        held = [
            (k, c.val)
            for k, c in enumerate(self.experiment.clients)
            if len(c.val) and cfg.federation.eval_clients
        ]
        test, *checks = evaluate_many(
            model,
            [self.experiment.test, *(v for _, v in held)],
            cfg.federation.eval_batch_size,
            cfg.model.eval_precision,
        )
        out: Record = test.as_dict("test_")
        out.update(self.experiment.group_scores(test.predictions))
        self.client_accuracy = {
            k: c.accuracy for (k, _), c in zip(held, checks, strict=True)
        }
        if self.auxiliary is not None:  # FedSP: the same prompt on the small model
            small = self.auxiliary(shape)
            small.load_trainable_state(state)
            (aux_test,) = evaluate_many(
                small,
                [self.experiment.test],
                cfg.federation.eval_batch_size,
                cfg.model.eval_precision,
            )
            out["auxiliary_test_accuracy"] = aux_test.accuracy
        accs = list(self.client_accuracy.values())
        if accs:
            out["client_val_accuracy_mean"] = float(np.mean(accs))
            out["client_val_accuracy_p10"] = float(np.percentile(accs, 10))
        return out


@dataclass
class FederatedRun:
    """One federated run of ``experiment`` (config sections may be overridden).

    Attributes:
        method: PEFT method (defaults to the config's).
        strategy_cfg / client_cfg: Override the config's sections (baselines do).
        run_dir: Where metrics.jsonl and checkpoints go (None: keep in memory).
        label: Name of the run in records (``"federated"``, ``"full-finetune"``).
        private: Apply the config's privacy, robust-aggregation and attack
            settings (off for the clean, non-private reference baselines).
        sizes / rule: Mixed-size LoRA: per client its size (``None``:
            excluded) and the aggregation rule (:mod:`fedpeft.server.mixed_lora`).
        runtime: Builds the runtime from the client algorithm (default: the
            embedded one; :mod:`fedpeft.flower` passes its own).
        secure_sum: Builds the secure sum (default: in process).
        client_sizes: Per client its n_k where the clients' data is not the
            experiment's (data holders with files of their own, as their
            nodes report them; default: the experiment's shards).
    """

    experiment: Experiment
    method: str | None = None
    strategy_cfg: StrategySection | None = None
    client_cfg: ClientSection | None = None
    run_dir: Path | None = None
    label: str = "federated"
    on_round: Callable[[dict[str, Any]], None] | None = None
    private: bool = True
    sizes: Sequence[LoraSize | None] | None = None
    rule: str = "hetlora"
    runtime: Callable[[BatchingClient], Runtime] | None = None
    secure_sum: SecureSumFactory = SecureSum
    client_sizes: Sequence[int] | None = None
    on_progress: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        exp, cfg = self.experiment, self.experiment.config
        strategy_section = self.strategy_cfg or cfg.strategy
        client_section = self.client_cfg or cfg.client
        strategy = build_strategy(strategy_section)
        sizes = (
            list(self.client_sizes)
            if self.client_sizes is not None
            else [len(c.train) for c in exp.clients]
        )
        if len(sizes) != len(exp.clients):
            raise ValueError(
                f"client_sizes has {len(sizes)} entries for {len(exp.clients)} clients"
            )
        aggregator = (
            build_aggregator(cfg, strategy, sum(sizes), self.secure_sum)
            if self.private
            else PlainAggregator()
        )
        record_dp = RecordDPLedger.build(cfg, sizes, strategy) if self.private else None
        server: Server
        self.auxiliary: Auxiliary | None = None
        client_pool: AdapterPool | None = None
        if self.sizes is None:
            if cfg.fedsp.enabled and self.method is None:
                client_pool = self._fedsp()
            else:
                self.model = exp.new_adapter(self.method)
            self.pool = AdapterPool(lambda shape: self.model)
            trained = sizes[: len(exp.clients) - (1 if self._server_steps else 0)]
            uniform = UniformServer(strategy, aggregator, len(trained), sum(trained))
            initial = self.model.trainable_state()
            server = (
                ScaffoldServer(uniform, initial)
                if strategy_section.scaffold
                else uniform
            )
        else:
            server, initial = self._mixed_server(aggregator)
        if cfg.peft.head_init == "zeros":
            initial = {
                k: np.zeros_like(v) if k.startswith("head.") else v
                for k, v in initial.items()
            }
        threats = cfg.attack if self.private else None
        self.attackers = (
            choose_attackers(len(exp.clients), threats.fraction, cfg.seed)
            if threats is not None
            else frozenset()
        )
        self.client = GradientClient(
            client_pool or self.pool,
            self.client_data,
            TrainSettings(
                client_section,
                cfg.seed,
                cfg.model.precision,
                cfg.model.eval_precision,
                cfg.federation.eval_batch_size,
                cfg.federation.bucket_size,
                cfg.federation.bucket_threads,
            ),
            record_dp.dp if record_dp else None,
            FlopMeter(),  # one meter: each step shape's FLOPs are counted once
            exp.features,
        )
        if self._server_steps:
            # FedSP: the last shard is the server's
            settings = client_section.model_copy(
                update={"local_steps": self._server_steps}
            )
            server = SteppedServer(
                server,
                ServerPromptStep(
                    self.model,
                    exp.clients[-1].train,
                    settings,
                    cfg.seed,
                    cfg.model.precision,
                ),
            )
        fed = cfg.federation
        self.algorithm: BatchingClient = self.client
        peft = exp.config.peft if self.method is None else None
        if self.auxiliary is not None and cfg.fedsp.model_steps:
            self.algorithm = ModelStageClient(
                self.client,
                self.auxiliary.backbone,
                lambda k: exp.clients[k],
                client_section,
                cfg.fedsp.model_steps,
                cfg.seed,
                cfg.model.precision,
            )
        if isinstance(peft, BlackBoxConfig):  # gradient-free clients
            server, self.algorithm = self._blackbox(peft, server, client_section)
        if self.attackers and threats is not None:
            logger.info(
                "attackers (%s): clients %s", threats.kind, sorted(self.attackers)
            )
            self.algorithm = AttackClient(
                self.algorithm, self.attackers, threats, cfg.seed
            )
        self.evaluator = Evaluator(self.pool, exp, client_pool)
        self.loop = RoundLoop(
            server,
            self.runtime(self.algorithm)
            if self.runtime
            else EmbeddedRuntime(self.algorithm, fed.batch_clients),
            self.evaluator,
            initial,
            LoopSettings(
                rounds=fed.rounds,
                seed=cfg.seed,
                num_clients=fed.num_clients,
                fraction=strategy_section.fraction_fit,
                min_clients=strategy_section.min_fit_clients,
                poisson=fed.sampling == "poisson",
                eval_every=fed.eval_every,
                warm_start=cfg.peft.head_init
                if cfg.peft.head_init in ("probe", "class-means", "lda")
                else None,
                update_norm_ratio=fed.update_norm_ratio,
                label=self.label,
                shipped_bytes=self.auxiliary.shipped_bytes if self.auxiliary else 0,
            ),
            self.run_dir,
            record_dp,
            self.on_round,
        )

    def client_data(self, k: int) -> ClientData:
        """Client k's shard as it trains on it: label-flipped for a
        ``label-flip`` attacker."""
        shard = self.experiment.clients[k]
        if k in self.attackers and self.experiment.config.attack.kind == "label-flip":
            return poisoned_shard(shard, self.experiment.num_classes)
        return shard

    @property
    def _server_steps(self) -> int:
        """FedSP's server-side steps per round (0: none)."""
        cfg = self.experiment.config
        on = cfg.fedsp.enabled and self.method is None and self.sizes is None
        return cfg.fedsp.server_steps if on else 0

    def _fedsp(self) -> AdapterPool:
        """FedSP: the auxiliary model (cached, or built and distilled now); the
        server's adapter on the full model becomes ``self.model``, and the
        returned pool holds the clients' adapter on the auxiliary model."""
        exp = self.experiment  # build_experiment checked the recipe
        steps = exp.config.fedsp.distill_steps
        name = "distilling the auxiliary model"

        def progress(step: int, _loss: float) -> None:
            if self.on_progress is not None:
                self.on_progress(name, step, steps)

        self.auxiliary = auxiliary_for(exp.config, exp.backbone, progress)
        self.model, client_model = fedsp_adapters(exp, self.auxiliary)
        return AdapterPool(lambda shape: client_model)

    def _blackbox(
        self, peft: BlackBoxConfig, server: Server, client_section: ClientSection
    ) -> tuple[BlackBoxServer, BlackBoxClient]:
        """The CMA-ES clients behind a model service and the server that merges
        their searches (:mod:`fedpeft.blackbox`)."""
        exp, cfg = self.experiment, self.experiment.config
        if not isinstance(server, UniformServer):
            raise ConfigError(
                "peft.method = 'blackbox' runs with the plain strategies; unset "
                "strategy.scaffold and devices (one adapter layout)"
            )
        if peft.server_rule == "fedbpt" and cfg.privacy.secagg:
            raise ConfigError(
                "peft.server_rule = 'fedbpt' ranks every client's mean in the clear, "
                "which secure aggregation hides; use peft.server_rule = 'mean' with "
                "privacy.secagg"
            )
        on_cpu = exp.backbone.device.type == "cpu"
        service = ModelService(
            exp.backbone, cfg.model.precision, 64 if on_cpu else 1024
        )
        client = BlackBoxClient(
            service,
            lambda k: exp.clients[k],
            peft,
            cfg.seed,
            tuple(exp.corpus.label_names),
            client_section.probe_iters,
            client_section.probe_l2,
        )
        return (
            BlackBoxServer(
                server,
                peft.server_rule,
                peft.sigma0,
                diagonal=peft.covariance == "diagonal",
                fixed_head=peft.head == "fixed",
            ),
            client,
        )

    def _mixed_server(self, aggregator: Aggregator) -> tuple[MixedLoraServer, Params]:
        """The mixed-size LoRA server and its r_max initial state; FFA-LoRA's A
        stays at its seeded value on every client (derived, never sent)."""
        exp, cfg = self.experiment, self.experiment.config
        assert self.sizes is not None
        if len(self.sizes) != len(exp.clients):
            raise ValueError(
                f"sizes has {len(self.sizes)} entries for {len(exp.clients)} "
                "clients; give one LoraSize (or None) per client"
            )
        num_layers = exp.backbone.num_layers
        for size in {s for s in self.sizes if s is not None}:
            if size.layers > num_layers:
                raise ValueError(
                    f"{size.label}: the backbone has only {num_layers} layers"
                )
        ffa = self.rule == "ffa"
        lora = cfg.peft if isinstance(cfg.peft, LoraConfig) else LoraConfig()

        def build(shape: Shape) -> AdapterClassifier:
            rank, layers = shape if shape is not None else (lora.rank, 0)
            model = exp.new_adapter(lora, rank=rank, layers=layers)
            if ffa:  # A is frozen: out of the payload
                for name, p in model.named_parameters():
                    if LORA_A in name:
                        p.requires_grad_(False)
            return model

        held = [s for s in self.sizes if s is not None]
        if not held:
            raise ValueError("every client is excluded; nothing can train")
        if self.rule not in HETERO_RULES:
            raise ValueError(
                f"rule={self.rule!r} is unknown; use one of {HETERO_RULES}"
            )
        full = LoraSize(max(s.rank for s in held), 0)
        reference = build(full.shape)
        initial = {
            n: p.detach().cpu().numpy().copy()
            for n, p in reference.named_parameters()
            if p.requires_grad or LORA_A in n
        }
        layouts = {
            s: list(build(s.shape).trainable_state_like()) for s in {*held, full}
        }
        server = MixedLoraServer(
            self.sizes,
            self.rule,
            initial,
            layouts,
            float(lora.alpha),
            lora.rank_scaling,
            aggregator,
            sum(len(c.train) for c in exp.clients),
        )

        def frozen(shape: Shape) -> Params:
            assert shape is not None  # mixed runs always name a size
            return server.frozen_a(LoraSize(*shape))

        self.pool = AdapterPool(build, frozen if ffa else None)
        self.model = self.pool(full.shape)
        return server, server.start(initial)  # FlexLoRA keeps products

    # ----------------------------------------------------------------- API
    def run(self, resume: bool = False) -> FederatedResult:
        """Run all rounds (continuing from the last checkpoint if ``resume``)."""
        result: LoopResult = self.loop.run(resume)
        state, shape = self.loop.server.eval_state(result.params)
        if not self.evaluator.client_accuracy:  # resumed after the last round
            self.evaluator(state, shape)
        model = self.pool(shape)
        model.load_trainable_state(state)
        return FederatedResult(
            result.history,
            result.params,
            model,
            result.totals,
            dict(self.evaluator.client_accuracy),
            result.wall_seconds,
        )

    def initial_round(self) -> tuple[Params, dict[str, Any]]:
        """Round 0 alone (the warm start), without persisting it."""
        return self.loop.initial_round()

    def run_round(self, rnd: int, params: Params) -> tuple[Params, dict[str, Any]]:
        """One round alone, without persisting it."""
        return self.loop.run_round(rnd, params)
