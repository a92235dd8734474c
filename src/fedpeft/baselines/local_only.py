"""Local-only training: every client tunes its own adapter alone, no federation.

Each client gets the epochs it would have trained over the whole federated run
(rounds × fraction sampled × local epochs, at least one) on its own shard; the
result is the clients' accuracy on the common test set, averaged (and its
spread), plus each client's accuracy on its own validation split.

With ``federation.batch_clients`` (and a method with a per-example forward) the
clients train together, as the engine's selected clients do
(:func:`~fedpeft.client.batched.train_clients_batched`): the same trained
states within floating-point tolerance, in a fraction of the time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedpeft.client import evaluate, train_adapter
from fedpeft.client.batched import ClientJob, supports_batching, train_clients_batched
from fedpeft.client.probe import warm_start
from fedpeft.config import ClientSection
from fedpeft.experiment import Experiment
from fedpeft.peft.base import AdapterClassifier
from fedpeft.seeding import stream
from fedpeft.types import Params


def run_local_only(exp: Experiment, method: str | None = None) -> dict[str, Any]:
    """Train each client alone and report mean/min test and validation accuracy."""
    cfg = exp.config
    c = cfg.client
    fed = cfg.federation
    epochs = max(1, math.ceil(fed.rounds * cfg.strategy.fraction_fit * c.local_epochs))
    local_cfg = c.model_copy(update={"local_epochs": epochs})
    model = exp.new_adapter(method)
    prec, bs = cfg.model.eval_precision, fed.eval_batch_size
    test_acc, test_f1, val_acc = [], [], []
    groups: list[dict[str, Any]] = []
    for client, state in zip(
        exp.clients, local_models(exp, model, local_cfg), strict=True
    ):
        model.load_trainable_state(state)
        result = evaluate(model, exp.test, bs, prec)
        test_acc.append(result.accuracy)
        test_f1.append(result.macro_f1)
        groups.append(exp.group_scores(result.predictions))
        if len(client.val):
            val_acc.append(evaluate(model, client.val, bs, prec).accuracy)
    return {
        "test_accuracy": float(np.mean(test_acc)),
        "test_macro_f1": float(np.mean(test_f1)),
        "test_accuracy_min": float(np.min(test_acc)),
        "test_accuracy_max": float(np.max(test_acc)),
        "client_val_accuracy_mean": float(np.mean(val_acc))
        if val_acc
        else float("nan"),
        "local_epochs": epochs,
        **_mean_groups(groups),
    }


def _mean_groups(per_client: list[dict[str, Any]]) -> dict[str, float]:
    """Each group's test accuracy (and the worst group's) averaged over the
    clients' models; a group one client's test set lacks is averaged over the
    others."""
    keys = {
        k for scores in per_client for k, v in scores.items() if k != "test_worst_group"
    }
    return {
        k: float(np.mean([s[k] for s in per_client if k in s])) for k in sorted(keys)
    }


def local_models(
    exp: Experiment, model: AdapterClassifier, local_cfg: ClientSection
) -> list[Params]:
    """Every client's adapter trained alone on its own shard, from ``model``'s
    state (with the head ``peft.head_init`` fits on the client's own shard);
    ``model`` is left holding one of them.

    Clients train together when ``federation.batch_clients`` is on and the
    method has a per-example forward, else one after another; each client's
    shuffles come from its own stream either way.
    """
    cfg = exp.config
    start = model.trainable_state()
    starts: list[Params] = []
    for client in exp.clients:
        starts.append(
            warm_start(
                cfg.peft.head_init,
                model,
                start,
                client.train,
                local_cfg,
                cfg.model.eval_precision,
                val=client.val,
                batch_size=cfg.federation.eval_batch_size,
                cache=exp.features,
            )
        )
    rngs = [stream(cfg.seed, "baseline", 1, k) for k in range(len(exp.clients))]
    if cfg.federation.batch_clients and supports_batching(model):
        jobs = [
            ClientJob(k, s, client.train, rng)
            for k, (client, s, rng) in enumerate(
                zip(exp.clients, starts, rngs, strict=True)
            )
        ]
        trained = train_clients_batched(
            model,
            jobs,
            local_cfg,
            precision=cfg.model.precision,
            bucket_size=cfg.federation.bucket_size,
            bucket_threads=cfg.federation.bucket_threads,
        )
        return [state for state, _ in trained]
    states = []
    for client, s, rng in zip(exp.clients, starts, rngs, strict=True):
        model.load_trainable_state(s)
        train_adapter(
            model, client.train, local_cfg, rng, precision=cfg.model.precision
        )
        states.append(model.trainable_state())
    return states
