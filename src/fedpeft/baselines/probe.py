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
from fedpeft.engine.experiment import Experiment
from fedpeft.metrics import accuracy, macro_f1
from fedpeft.models.embed import embed_dataset
from fedpeft.models.tokenized import tokenize


def _scores(
    labels: np.ndarray, logits: torch.Tensor, num_classes: int
) -> dict[str, float]:
    preds = logits.argmax(dim=1).numpy()
    loss = float(F.cross_entropy(logits, torch.from_numpy(labels)))
    return {
        "test_loss": loss,
        "test_accuracy": accuracy(labels, preds),
        "test_macro_f1": macro_f1(labels, preds, num_classes),
    }


def run_linear_probe(exp: Experiment) -> dict[str, Any]:
    """Fit a linear head on frozen embeddings of all training data; test it."""
    cfg = exp.config
    prec = cfg.model.eval_precision
    train = embed_dataset(exp.backbone, exp.train, cfg.federation.eval_batch_size, prec)
    test = embed_dataset(exp.backbone, exp.test, cfg.federation.eval_batch_size, prec)
    head = fit_linear_head(
        train,
        exp.train.labels,
        exp.num_classes,
        epochs=max(cfg.client.probe_epochs, 200),
        lr=cfg.client.probe_lr,
    )
    logits = test @ torch.from_numpy(head["head.weight"]).T + torch.from_numpy(
        head["head.bias"]
    )
    return _scores(exp.test.labels, logits, exp.num_classes)


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
    return _scores(exp.test.labels, logits, exp.num_classes)
