"""Evaluation of an adapter on a tokenized data set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.metrics import accuracy, macro_f1
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    macro_f1: float
    num_examples: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_f1": self.macro_f1,
        }


def predict_logits(
    model: AdapterClassifier,
    data: TokenizedDataset,
    batch_size: int,
    precision: str = "bf16",
) -> np.ndarray:
    """Logits ``(n, num_classes)`` in the data set's order, under inference mode with
    length-sorted batches (little padding)."""
    out = np.empty((len(data), model.head.out_features), np.float32)
    with torch.inference_mode(), autocast(precision):
        for idx, batch in data.length_sorted_batches(batch_size):
            out[idx] = model(batch).float().numpy()
    return out


def evaluate(
    model: AdapterClassifier,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "bf16",
) -> EvalResult:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on ``data``."""
    if len(data) == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    logits = predict_logits(model, data, batch_size, precision)
    labels = data.labels
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    preds = logits.argmax(axis=1)
    return EvalResult(
        loss,
        accuracy(labels, preds),
        macro_f1(labels, preds, model.head.out_features),
        len(data),
    )
