"""Classification metrics over label arrays (pure numpy)."""

from __future__ import annotations

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
