"""Client algorithms: what a client does with an :class:`Instruction`.

A client algorithm turns the server's instruction into a reply update; the
runtime decides where it runs (this process, a Flower ClientApp). The gradient
client trains by backprop (optionally with FedProx's proximal term, or as
record-level DP-SGD) and can train many clients together on the shared
backbone (:meth:`GradientClient.fit_many`, the embedded runtime's fast path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedpeft.aggregation.class_means import NLL_SUMS, TEMPERATURES, nll_sums
from fedpeft.aggregation.class_means import class_statistics as feature_statistics
from fedpeft.aggregation.lda import (
    FEATURE_GRAM,
    GRAM_FLAG,
    candidate_nll_sums,
    gram,
    split_candidates,
)
from fedpeft.client.batched import ClientJob, supports_batching, train_clients_batched
from fedpeft.client.dp_local import RecordDP, dp_train_clients_batched
from fedpeft.client.feature_cache import FeatureCache, pooled_features
from fedpeft.client.flops import FlopMeter
from fedpeft.client.head_schedule import round_settings
from fedpeft.client.label_skew import LogitAdjust, logit_adjust
from fedpeft.client.local import finish_update, local_update
from fedpeft.client.probe import probe_start
from fedpeft.client.scaffold import split_control
from fedpeft.config import ClientSection
from fedpeft.messages import Instruction
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.seeding import stream, torch_generator
from fedpeft.types import ClientUpdate

logger = logging.getLogger(__name__)


class ClientData(Protocol):
    """One client's shard, split into train and validation."""

    @property
    def train(self) -> TokenizedDataset: ...

    @property
    def val(self) -> TokenizedDataset: ...


class ClientAlgorithm(Protocol):
    """What a runtime needs from a client algorithm."""

    def fit(self, ins: Instruction) -> ClientUpdate:
        """Train from ``ins.payload``; return ΔP, n_k and metrics."""
        ...

    def probe(self, ins: Instruction) -> ClientUpdate:
        """Fit the head as a linear probe on the client's features (warm start)."""
        ...

    def class_stats(self, ins: Instruction) -> ClientUpdate:
        """Per-class feature statistics of the client's data (exact warm start)."""
        ...

    def calibrate(self, ins: Instruction) -> ClientUpdate:
        """Summed NLL per calibration temperature (exact warm start, 2nd pass)."""
        ...


class BatchingClient(ClientAlgorithm, Protocol):
    """A client algorithm as the runtimes hold it, with the embedded
    runtime's fast path of training a group together."""

    def can_batch(self, shape: tuple[int, int] | None) -> bool:
        """Whether clients of adapter ``shape`` can train together."""
        ...

    def fit_many(self, instructions: Sequence[Instruction]) -> list[ClientUpdate]:
        """Fit every instruction (the same adapter shape), in order."""
        ...


@dataclass
class WrappedClient:
    """A client algorithm that passes every task to ``inner`` (subclasses
    override what they change: an attacker's fit, FedSP's model stage)."""

    inner: BatchingClient

    def fit(self, ins: Instruction) -> ClientUpdate:
        return self.inner.fit(ins)

    def can_batch(self, shape: tuple[int, int] | None) -> bool:
        return self.inner.can_batch(shape)

    def fit_many(self, instructions: Sequence[Instruction]) -> list[ClientUpdate]:
        return self.inner.fit_many(instructions)

    def probe(self, ins: Instruction) -> ClientUpdate:
        return self.inner.probe(ins)

    def class_stats(self, ins: Instruction) -> ClientUpdate:
        return self.inner.class_stats(ins)

    def calibrate(self, ins: Instruction) -> ClientUpdate:
        return self.inner.calibrate(ins)


def run_task(client: ClientAlgorithm, ins: Instruction) -> ClientUpdate:
    """Carry out ``ins`` with ``client``: the task names the method."""
    if ins.task == "probe":
        return client.probe(ins)
    if ins.task == "class-stats":
        return client.class_stats(ins)
    if ins.task == "calibrate":
        return client.calibrate(ins)
    return client.fit(ins)


@dataclass(frozen=True)
class TrainSettings:
    """How local training runs (from the run config's client/model sections)."""

    client: ClientSection
    seed: int
    precision: str = "fp32"
    eval_precision: str = "auto"
    eval_batch_size: int = 128
    bucket_size: int = 16
    bucket_threads: int = 1


@dataclass
class GradientClient:
    """Local training by backprop on the shared frozen backbone.

    Attributes:
        model_for: The adapter of a shape (``None``: the run's configured one);
            see :class:`fedpeft.client.pool.AdapterPool`.
        data_for: Client k's train/validation data.
        settings: Local-training settings.
        record_dp: Record-level DP-SGD of every client, or ``None``.
        flops: One FLOP meter for the process (each step shape counted once).
        features: The run's feature cache: the warm start's passes and the
            baselines after it compute a client's features once.
    """

    model_for: Callable[[tuple[int, int] | None], AdapterClassifier]
    data_for: Callable[[int], ClientData]
    settings: TrainSettings
    record_dp: RecordDP | None = None
    flops: FlopMeter | None = None
    features: FeatureCache | None = None

    def dp_generator(self, ins: Instruction) -> torch.Generator:
        """Client k's DP-SGD noise stream in this round (batched or not)."""
        return torch_generator(
            stream(self.settings.seed, "dp", ins.round, 10**6 + ins.client_id)
        )

    def adjust(self, model: AdapterClassifier, client_id: int) -> LogitAdjust | None:
        """Client k's label-skew logit map (``client.loss``), from its own counts."""
        train = self.data_for(client_id).train
        return logit_adjust(
            self.settings.client, train.labels, model.head.out_features, model.device
        )

    def fit(self, ins: Instruction) -> ClientUpdate:
        s = self.settings
        data = self.data_for(ins.client_id)
        model = self.model_for(ins.shape)
        state, correction = split_control(ins.payload)
        return local_update(
            ins.client_id,
            model,
            state,
            data.train,
            data.val,
            round_settings(s.client, ins.round),
            stream(s.seed, "client", ins.round, ins.client_id),
            proximal_mu=float(ins.config.get("proximal_mu", 0.0)),
            precision=s.precision,
            eval_precision=s.eval_precision,
            eval_batch_size=s.eval_batch_size,
            record_dp=self.record_dp,
            dp_generator=self.dp_generator(ins),
            flops=self.flops,
            adjust=self.adjust(model, ins.client_id),
            correction=correction,
        )

    def can_batch(self, shape: tuple[int, int] | None) -> bool:
        """Whether clients of ``shape`` can train together (per-example forward)."""
        return supports_batching(self.model_for(shape))

    def fit_many(self, group: Sequence[Instruction]) -> list[ClientUpdate]:
        """Train clients of one shape together: one forward/backward over the
        shared backbone per step for all of them, each with its own data order,
        AdamW state (and DP-SGD noise); equal to :meth:`fit` one by one within
        float tolerance.

        Raises:
            ValueError: if the group mixes shapes.
        """
        shapes = {ins.shape for ins in group}
        if len(shapes) != 1:
            raise ValueError(f"fit_many needs one adapter shape, got {shapes}")
        rounds = {ins.round for ins in group}
        if len(rounds) != 1:
            raise ValueError(f"fit_many needs one round, got {sorted(rounds)}")
        s, model = self.settings, self.model_for(group[0].shape)
        client_cfg = round_settings(s.client, group[0].round)
        split = [split_control(ins.payload) for ins in group]
        jobs = [
            ClientJob(
                ins.client_id,
                state,
                self.data_for(ins.client_id).train,
                stream(s.seed, "client", ins.round, ins.client_id),
            )
            for ins, (state, _) in zip(group, split, strict=True)
        ]
        adjust = LogitAdjust.stack(
            [self.adjust(model, ins.client_id) for ins in group],
            model.head.out_features,
            model.device,
        )
        corrections = None
        if any(control for _, control in split):
            corrections = model.stack_states([control for _, control in split])
        if self.record_dp is not None:
            if adjust is not None or corrections is not None:
                raise ValueError(
                    "record-level DP-SGD clips each example's gradient of plain "
                    "cross-entropy; use client.loss = 'cross-entropy' and "
                    "strategy.scaffold = false with privacy.record_dp"
                )
            trained = dp_train_clients_batched(
                model,
                jobs,
                [self.dp_generator(ins) for ins in group],
                client_cfg,
                self.record_dp,
                precision=s.precision,
                bucket_size=s.bucket_size,
            )
        else:
            trained = train_clients_batched(
                model,
                jobs,
                client_cfg,
                proximal_mu=float(group[0].config.get("proximal_mu", 0.0)),
                precision=s.precision,
                flops=self.flops,
                bucket_size=s.bucket_size,
                bucket_threads=s.bucket_threads,
                adjust=adjust,
                corrections=corrections,
            )
        out = []
        for job, (state, stats) in zip(jobs, trained, strict=True):
            model.load_trainable_state(state)
            out.append(
                finish_update(
                    job.client_id,
                    model,
                    job.start,
                    stats,
                    len(job.data),
                    self.data_for(job.client_id).val,
                    s.eval_batch_size,
                    s.eval_precision,
                )
            )
        return out

    def probe(self, ins: Instruction) -> ClientUpdate:
        s = self.settings
        train = self.data_for(ins.client_id).train
        state = probe_start(
            self.model_for(ins.shape),
            ins.payload,
            train,
            s.client,
            s.eval_precision,
            s.eval_batch_size,
            self.features,
        )
        head = {k: v for k, v in state.items() if k.startswith("head.")}
        return ClientUpdate(ins.client_id, head, len(train))

    def class_stats(self, ins: Instruction) -> ClientUpdate:
        """Per-class feature sums, counts and the per-dimension sum of squares
        (and, when asked, the Gram matrix) of the client's training data under
        ``ins.payload``, times the public ``stats_scale`` (1 / Σ n over the
        federation), for the exact warm start
        (:mod:`fedpeft.aggregation.class_means`, :mod:`fedpeft.aggregation.lda`)."""
        train = self.data_for(ins.client_id).train
        feats = self._features(ins)
        num_classes = self.model_for(ins.shape).head.out_features
        stats = feature_statistics(feats, train.labels, num_classes)
        if ins.config.get(GRAM_FLAG):  # the lda warm start
            stats[FEATURE_GRAM] = gram(feats)
        scale = float(ins.config.get("stats_scale", 1.0))
        return ClientUpdate(
            ins.client_id,
            {k: (v * scale).astype("float32") for k, v in stats.items()},
            len(train),
        )

    def calibrate(self, ins: Instruction) -> ClientUpdate:
        """The summed NLL of the client's training data under the payload's
        head divided by each temperature of the calibration grid, times the
        public ``stats_scale`` (:func:`fedpeft.aggregation.class_means.nll_sums`);
        with candidate heads (``lda``), of its validation split under each
        (:func:`fedpeft.aggregation.lda.candidate_nll_sums`)."""
        train = self.data_for(ins.client_id).train
        state, candidates = split_candidates(split_control(ins.payload)[0])
        scale = float(ins.config.get("stats_scale", 1.0))
        if candidates:  # lda: every candidate head, on the validation split
            val = self.data_for(ins.client_id).val
            sums = np.zeros((len(candidates), len(TEMPERATURES)))
            if len(val):
                model, s = self.model_for(ins.shape), self.settings
                model.load_trainable_state(state)
                held_out = pooled_features(
                    model, val, s.eval_batch_size, s.eval_precision, self.features
                )
                sums = candidate_nll_sums(held_out.numpy(), val.labels, candidates)
            sums = sums * scale
        else:
            feats = self._features(ins)
            logits = feats @ state["head.weight"].T + state["head.bias"]
            sums = nll_sums(logits, train.labels) * scale
        return ClientUpdate(
            ins.client_id, {NLL_SUMS: sums.astype("float32")}, len(train)
        )

    def _features(self, ins: Instruction) -> np.ndarray:
        """Client k's pooled training features under the payload's body (the
        warm start's second pass finds its first pass's in the cache)."""
        model = self.model_for(ins.shape)
        model.load_trainable_state(split_candidates(split_control(ins.payload)[0])[0])
        s = self.settings
        train = self.data_for(ins.client_id).train
        return pooled_features(
            model, train, s.eval_batch_size, s.eval_precision, self.features
        ).numpy()
