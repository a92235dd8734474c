"""Classification metrics over label arrays (pure numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def confusion_matrix(
    labels: np.ndarray, preds: np.ndarray, num_classes: int
) -> np.ndarray:
    """``(num_classes, num_classes)`` counts; rows are true classes."""
    flat = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Share of correct predictions (0.0 for no examples)."""
    return float(np.mean(labels == preds)) if len(labels) else 0.0


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``labels``
    or ``preds`` (a class absent from both is skipped, as scikit-learn does with
    ``labels=None``)."""
    cm = confusion_matrix(labels, preds, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    denom = support + predicted  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def group_accuracy(
    labels: np.ndarray, preds: np.ndarray, groups: np.ndarray
) -> dict[str, float]:
    """Accuracy within each group (keys: the groups' values as strings, in
    sorted order); groups without examples do not appear."""
    if not len(labels) == len(preds) == len(groups):
        raise ValueError(
            f"labels, preds and groups differ in length: {len(labels)}, "
            f"{len(preds)}, {len(groups)}"
        )
    values = np.asarray(groups).astype(str)
    return {
        str(g): accuracy(labels[values == g], preds[values == g])
        for g in np.unique(values)
    }


def group_metrics(
    labels: np.ndarray,
    preds: np.ndarray,
    metadata: Mapping[str, np.ndarray],
    columns: Sequence[str],
) -> dict[str, float | str]:
    """``accuracy@COLUMN=VALUE`` for every group of every column, and the
    worst of them (``worst_group_accuracy``, ``worst_group``: ``COLUMN=VALUE``;
    ties go to the first in sorted order). Empty for no columns."""
    scores: dict[str, float] = {}
    for column in columns:
        for group, acc in group_accuracy(labels, preds, metadata[column]).items():
            scores[f"accuracy@{column}={group}"] = acc
    if not scores:
        return {}
    worst = min(scores, key=lambda k: (scores[k], k))
    return {
        **scores,
        "worst_group_accuracy": scores[worst],
        "worst_group": worst.removeprefix("accuracy@"),
    }
