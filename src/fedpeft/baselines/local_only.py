"""Local-only training: every client tunes its own adapter alone, no federation.

Each client gets the epochs it would have trained over the whole federated run
(rounds × fraction sampled × local epochs, at least one) on its own shard; the
result is the clients' accuracy on the common test set, averaged (and its
spread), plus each client's accuracy on its own validation split.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedpeft.client import evaluate, fit_head, train_adapter
from fedpeft.engine.experiment import Experiment
from fedpeft.engine.seeding import stream


def run_local_only(exp: Experiment, method: str | None = None) -> dict[str, Any]:
    """Train each client alone and report mean/min test and validation accuracy."""
    cfg = exp.config
    c = cfg.client
    fed = cfg.federation
    epochs = max(1, math.ceil(fed.rounds * cfg.strategy.fraction_fit * c.local_epochs))
    local_cfg = c.model_copy(update={"local_epochs": epochs})
    model = exp.new_adapter(method)
    start = model.trainable_state()
    prec, bs = cfg.model.eval_precision, fed.eval_batch_size
    test_acc, test_f1, val_acc = [], [], []
    for k, client in enumerate(exp.clients):
        model.load_trainable_state(start)
        if cfg.peft.head_init == "probe":
            head = fit_head(model, client.train, c.probe_iters, c.probe_l2, prec)
            model.load_trainable_state({**start, **head})
        train_adapter(
            model,
            client.train,
            local_cfg,
            stream(cfg.seed, "baseline", 1, k),
            precision=cfg.model.precision,
        )
        result = evaluate(model, exp.test, bs, prec)
        test_acc.append(result.accuracy)
        test_f1.append(result.macro_f1)
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
    }
