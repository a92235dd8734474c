"""Centralized tuning of the same adapter on the pooled data, same budget.

The budget is counted in example-passes: the centralized run trains on as many
examples as all clients together did in the federated run, split into as many
chunks as there were rounds so its curve can be drawn against rounds.
"""

from __future__ import annotations

import math
from typing import Any

from fedpeft.client import evaluate, train_adapter
from fedpeft.client.evaluate import EvalResult
from fedpeft.client.flops import FlopMeter
from fedpeft.client.probe import warm_start
from fedpeft.client.steps import build_optimizer
from fedpeft.experiment import Experiment
from fedpeft.seeding import stream


def run_centralized(
    exp: Experiment, budget_examples: int, rounds: int, method: str | None = None
) -> list[dict[str, Any]]:
    """Train one adapter on the union of the clients' training data.

    Args:
        budget_examples: Total training examples to process (the federated run's).
        rounds: Number of evaluation points (the federated run's rounds).

    Returns:
        One record per round-equivalent (``run="centralized"``), round 0 included.
    """
    cfg = exp.config
    c = cfg.client
    model = exp.new_adapter(method)
    prec, bs = cfg.model.eval_precision, cfg.federation.eval_batch_size
    # exp.train is the union of the clients' train splits: read as those
    # shards, its features are the federated warm start's, from the cache
    model.load_trainable_state(
        warm_start(
            cfg.peft.head_init,
            model,
            model.trainable_state(),
            [k.train for k in exp.clients],
            c,
            prec,
            val=[k.val for k in exp.clients],
            batch_size=bs,
            cache=exp.features,
        )
    )
    records = [
        {
            "run": "centralized",
            "round": 0,
            **_scored(exp, evaluate(model, exp.test, bs, prec)),
        }
    ]
    chunks = max(rounds, 1)
    steps_per_chunk = max(1, math.ceil(budget_examples / c.batch_size / chunks))
    chunk_cfg = c.model_copy(update={"local_steps": steps_per_chunk})
    optimizer = build_optimizer(model, c)  # one optimizer: chunks only mark eval points
    meter = FlopMeter()  # one meter: each padded length is counted once, not per chunk
    for rnd in range(1, chunks + 1):
        stats = train_adapter(
            model,
            exp.train,
            chunk_cfg,
            stream(cfg.seed, "baseline", 0, rnd),
            precision=cfg.model.precision,
            optimizer=optimizer,
            flops=meter,
        )
        records.append(
            {
                "run": "centralized",
                "round": rnd,
                "train_loss": stats.loss,
                "train_examples": stats.examples,
                **_scored(exp, evaluate(model, exp.test, bs, prec)),
            }
        )
    return records


def _scored(exp: Experiment, result: EvalResult) -> dict[str, Any]:
    return {**result.as_dict("test_"), **exp.group_scores(result.predictions)}
