"""Baselines that train no backbone input: a linear probe and a zero-shot head.

* Linear probe: softmax regression on the frozen backbone's mean-pooled
  embeddings of the pooled training data (centralized; the floor a tuned
  adapter should not end below).
* Zero-shot: each text goes to the label whose name embeds closest (cosine) —
  what the sentence encoder knows with no training at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.probe import fit_linear_head
from fedpeft.experiment import Experiment
from fedpeft.metrics import accuracy, macro_f1
from fedpeft.models.embed import embed_dataset
from fedpeft.models.tokenized import tokenize
from fedpeft.types import Params


def _scores(exp: Experiment, logits: torch.Tensor) -> dict[str, Any]:
    """Test loss, accuracy, macro-F1 and the per-group accuracies."""
    labels = exp.test.labels
    preds = logits.argmax(dim=1).numpy()
    loss = float(F.cross_entropy(logits, torch.from_numpy(labels)))
    return {
        "test_loss": loss,
        "test_accuracy": accuracy(labels, preds),
        "test_macro_f1": macro_f1(labels, preds, exp.num_classes),
        **exp.group_scores(preds),
    }


PROBE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def run_linear_probe(exp: Experiment) -> dict[str, Any]:
    """Fit a linear head on frozen embeddings of the pooled training data.

    The L2 strength is chosen from :data:`PROBE_L2_GRID` by accuracy on the
    union of the clients' validation splits (never the test set), so the probe
    is a tuned baseline, not a strawman.
    """
    cfg = exp.config
    prec, bs = cfg.model.eval_precision, cfg.federation.eval_batch_size
    train = embed_dataset(exp.backbone, exp.train, bs, prec)
    test = embed_dataset(exp.backbone, exp.test, bs, prec)
    vals = [
        (c.val.labels, embed_dataset(exp.backbone, c.val, bs, prec))
        for c in exp.clients
        if len(c.val)
    ]
    best: tuple[float, float, Params] | None = None
    for l2 in PROBE_L2_GRID:
        head = fit_linear_head(
            train,
            exp.train.labels,
            exp.num_classes,
            max_iter=cfg.client.probe_iters,
            l2=l2,
        )
        score = sum(
            accuracy(y, _logits(f, head).argmax(1).numpy()) * len(y) for y, f in vals
        )
        if best is None or score > best[0]:
            best = (score, l2, head)
    assert best is not None
    return {
        **_scores(exp, _logits(test, best[2])),
        "l2": best[1],
    }


def _logits(features: torch.Tensor, head: Params) -> torch.Tensor:
    weight = torch.from_numpy(head["head.weight"])
    return features @ weight.T + torch.from_numpy(head["head.bias"])


def run_zero_shot(exp: Experiment) -> dict[str, Any]:
    """Nearest label-name embedding by cosine similarity; no training."""
    cfg = exp.config
    names = [n.replace("_", " ").replace(".", " ") for n in exp.corpus.label_names]
    name_data = tokenize(
        exp.backbone, names, np.arange(len(names)), cfg.model.max_length
    )
    prec = cfg.model.eval_precision
    label_emb = F.normalize(
        embed_dataset(exp.backbone, name_data, precision=prec), dim=1
    )
    test = F.normalize(
        embed_dataset(exp.backbone, exp.test, cfg.federation.eval_batch_size, prec),
        dim=1,
    )
    logits = (test @ label_emb.T) / 0.05  # cosine / temperature, for a finite loss
    return _scores(exp, logits)
