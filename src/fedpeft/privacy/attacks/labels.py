"""Label-distribution inference from a head update (iDLG's observation, made
quantitative with shadow clients).

With a softmax head trained by cross-entropy, the bias gradient of class c
summed over a batch is Σ_i (p_ic − y_ic): classes a client holds get negative
gradients and their bias rises (Zhao et al. 2020, iDLG; Wainakh et al. 2022,
LLG). After several AdamW steps the size of Δb no longer counts examples, so
the attacker calibrates: it trains shadow clients with known label mixes on
its own labeled data from the same global state, and fits a ridge regression
from the centred bias update to the centred label histogram
(:class:`LabelInference`). A prediction is projected onto the simplex.

Success is the total-variation distance between the inferred and the true
histogram, against the distance of the attacker's prior (the global label
distribution) to the truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedpeft.types import Float64Array

BIAS_KEY = "head.bias"


def label_histogram(labels: np.ndarray, num_classes: int) -> Float64Array:
    """The fraction of each class among ``labels``."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    return np.asarray(counts / max(int(counts.sum()), 1), np.float64)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """½ Σ |p − q| (0: equal; 1: disjoint supports)."""
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def head_feature(
    delta: Mapping[str, np.ndarray], keys: Sequence[str] = (BIAS_KEY,)
) -> Float64Array:
    """The attack's view of an update: the centred head-bias update
    Δb − mean(Δb), followed by the other ``keys``' tensors flattened.

    Raises:
        ValueError: if the update lacks one of ``keys``.
    """
    missing = [k for k in keys if k not in delta]
    if missing:
        raise ValueError(
            f"the update has no {missing} (keys: {sorted(delta)}); label "
            "inference reads the classifier head"
        )
    parts = []
    for key in keys:
        v = np.asarray(delta[key], np.float64).ravel()
        parts.append(v - v.mean() if key == BIAS_KEY else v)
    return np.asarray(np.concatenate(parts), np.float64)


def project_simplex(v: np.ndarray) -> Float64Array:
    """Euclidean projection onto the probability simplex (Duchi et al. 2008)."""
    x = np.asarray(v, np.float64)
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, x.size + 1)
    rho = int(np.nonzero(u - css / ind > 0)[0][-1])
    theta = css[rho] / (rho + 1.0)
    return np.asarray(np.maximum(x - theta, 0.0), np.float64)


@dataclass
class LabelInference:
    """Ridge regression from centred Δb to the centred label histogram.

    Attributes:
        ridge: L2 strength (relative to the features' scale).
        keys: The update's tensors it reads (the bias alone, iDLG's signal,
            or with the head weight as well).
    """

    ridge: float = 1e-3
    keys: tuple[str, ...] = (BIAS_KEY,)
    _coef: Float64Array | None = None
    _scale: float = 1.0

    def fit(
        self, deltas: Sequence[Mapping[str, np.ndarray]], histograms: np.ndarray
    ) -> LabelInference:
        """Calibrate on shadow clients' updates and their true histograms.

        Raises:
            ValueError: with fewer than 2 shadows or mismatched counts.
        """
        x = np.stack([head_feature(d, self.keys) for d in deltas])
        y = np.asarray(histograms, np.float64)
        if len(x) < 2 or len(x) != len(y):
            raise ValueError(
                f"need >= 2 shadow updates with one histogram each, got "
                f"{len(x)} updates and {len(y)} histograms"
            )
        self._scale = float(np.abs(x).mean()) or 1.0
        xs = x / self._scale
        yc = y - 1.0 / y.shape[1]
        # dual form: the kernel is shadows x shadows, however wide the view
        gram = xs @ xs.T + self.ridge * len(xs) * np.eye(len(xs))
        self._coef = xs.T @ np.linalg.solve(gram, yc)
        return self

    def predict(self, delta: Mapping[str, np.ndarray]) -> Float64Array:
        """The inferred label histogram of the client that sent ``delta``.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        if self._coef is None:
            raise RuntimeError("call fit() on shadow updates first")
        x = head_feature(delta, self.keys) / self._scale
        return project_simplex(x @ self._coef + 1.0 / self._coef.shape[1])
