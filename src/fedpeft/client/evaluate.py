"""Evaluation of an adapter on a tokenized data set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.metrics import accuracy, macro_f1
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    macro_f1: float
    num_examples: int
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

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
    precision: str = "auto",
) -> np.ndarray:
    """Logits ``(n, num_classes)`` in the data set's order, under inference mode with
    length-sorted batches (little padding)."""
    out = np.empty((len(data), model.head.out_features), np.float32)
    with torch.inference_mode(), autocast(precision, model.device):
        for idx, batch in data.length_sorted_batches(batch_size, model.device):
            out[idx] = model(batch).float().cpu().numpy()
    return out


def evaluate(
    model: AdapterClassifier,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "auto",
) -> EvalResult:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on ``data``."""
    if len(data) == 0:
        return _EMPTY
    logits = predict_logits(model, data, batch_size, precision)
    return _scores(logits, data.labels, model.head.out_features)


_EMPTY = EvalResult(float("nan"), float("nan"), float("nan"), 0)


def _scores(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> EvalResult:
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    preds = logits.argmax(axis=1)
    return EvalResult(
        loss,
        accuracy(labels, preds),
        macro_f1(labels, preds, num_classes),
        len(labels),
        preds,
    )


def concat_datasets(
    parts: Sequence[TokenizedDataset],
) -> tuple[TokenizedDataset, np.ndarray]:
    """One data set from several (token matrices right-padded to the widest;
    images, all of one shape, stacked) and each example's part."""
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    if not parts:
        empty = TokenizedDataset(
            np.zeros((0, 0), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        )
        return empty, owner
    width = max(p.input_ids.shape[1] for p in parts)
    ids = [
        p.input_ids
        if p.input_ids.ndim > 2  # images: (n, H, W, C), nothing to pad
        else np.pad(p.input_ids, ((0, 0), (0, width - p.input_ids.shape[1])))
        for p in parts
    ]
    union = type(parts[0])(
        np.concatenate(ids),
        np.concatenate([p.lengths for p in parts]),
        np.concatenate([p.labels for p in parts]),
    )
    return union, owner


def evaluate_many(
    model: AdapterClassifier,
    datasets: Sequence[TokenizedDataset],
    batch_size: int = 128,
    precision: str = "auto",
    states: Sequence[Params] | None = None,
) -> list[EvalResult]:
    """:func:`evaluate` on each data set, from one length-sorted pass over all.

    Many small validation sets (one per client) cost many short, padded
    batches when evaluated one by one; their union is sorted by length once.
    With ``states``, data set i is scored by its own trainable state
    ``states[i]`` through the method's per-example forward, so the clients'
    local models are evaluated together too (``model``'s own tensors are then
    not used).

    Raises:
        ValueError: if ``states`` does not have one state per data set.
    """
    if states is not None and len(states) != len(datasets):
        raise ValueError(f"{len(states)} states for {len(datasets)} data sets")
    union, owner = concat_datasets(datasets)
    if len(union) == 0:
        return [_EMPTY for _ in datasets]
    classes = model.head.out_features
    if states is None:
        logits = predict_logits(model, union, batch_size, precision)
    else:
        stacked = model.stack_states(states)
        who = torch.from_numpy(owner).to(model.device)
        logits = np.empty((len(union), classes), np.float32)
        session = model.per_example_session()
        with torch.inference_mode(), autocast(precision, model.device), session:
            for idx, batch in union.length_sorted_batches(batch_size, model.device):
                params = {n: t[who[idx]] for n, t in stacked.items()}
                out = model.per_example_logits(batch, params)
                logits[idx] = out.float().cpu().numpy()
    return [
        _scores(logits[owner == i], d.labels, classes) if len(d) else _EMPTY
        for i, d in enumerate(datasets)
    ]
