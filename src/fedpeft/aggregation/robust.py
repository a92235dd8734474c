"""Byzantine-robust estimates of the round's update: pure numpy over a ``(K, d)``
matrix whose rows are the K clients' flattened updates.

* :func:`coordinate_median` — per coordinate, the median of the K values
  (Yin et al. 2018). Breakdown point ⌈K/2⌉ − 1: fewer corrupted rows than that
  keep every coordinate inside the range of the honest values.
* :func:`trimmed_mean` — per coordinate, drop the ⌊βK⌋ largest and smallest
  values and average the rest (Yin et al. 2018). Tolerates ⌊βK⌋ corrupted rows.
* :func:`krum_scores` / :func:`krum_select` — Krum and Multi-Krum (Blanchard
  et al. 2017): each row's score is the sum of squared distances to its
  K − f − 2 nearest other rows; the m rows of lowest score are kept. Needs
  K ≥ 2f + 3.
* :func:`clip_rows` — scale each row to L2 norm ≤ a bound (norm bounding,
  Sun et al. 2019).
* :func:`robust_class_sums` — the warm start's per-class feature sums with
  each class mean replaced by a robust estimate over the clients holding it.

Sums run in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedpeft.types import Float64Array


def _rows(x: np.ndarray) -> Float64Array:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(
            f"expected a (clients, dims) matrix with at least one row, got {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError("client updates hold NaN or infinite values")
    return m


def coordinate_median(x: np.ndarray) -> Float64Array:
    """Per-coordinate median of the rows (the mean of the two middle values
    for an even count)."""
    return np.median(_rows(x), axis=0)


def trim_count(clients: int, trim: float) -> int:
    """Values dropped at each end per coordinate: ⌊β·K⌋.

    Raises:
        ValueError: if ``trim`` is outside [0, 0.5) or nothing would be left.
    """
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    k = int(np.floor(trim * clients + 1e-9))
    if clients - 2 * k < 1:
        raise ValueError(f"trimming {k} of {clients} at each end leaves nothing")
    return k


def trimmed_mean(x: np.ndarray, trim: float) -> Float64Array:
    """Per coordinate, the mean after dropping the ⌊trim·K⌋ largest and
    smallest values (``trim = 0``: the plain mean)."""
    m = _rows(x)
    k = trim_count(m.shape[0], trim)
    kept = np.sort(m, axis=0)[k : m.shape[0] - k]
    return np.asarray(kept.mean(axis=0), dtype=np.float64)


def krum_max_byzantine(clients: int) -> int:
    """The largest f Krum's guarantee allows for K rows: K ≥ 2f + 3."""
    return max((clients - 3) // 2, 0)


def krum_scores(x: np.ndarray, byzantine: int) -> Float64Array:
    """Krum's score of every row: Σ of its K − f − 2 smallest squared distances
    to the other rows (fewer if K is small: at least one neighbour).

    Raises:
        ValueError: if ``byzantine`` is negative.
    """
    m = _rows(x)
    if byzantine < 0:
        raise ValueError(f"byzantine must be >= 0, got {byzantine}")
    k = m.shape[0]
    if k == 1:
        return np.zeros(1)
    sq = np.einsum("ij,ij->i", m, m)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (m @ m.T), 0.0)
    np.fill_diagonal(dist, np.inf)
    neighbours = min(max(k - byzantine - 2, 1), k - 1)
    nearest = np.sort(dist, axis=1)[:, :neighbours]
    return np.asarray(nearest.sum(axis=1), dtype=np.float64)


def krum_select(x: np.ndarray, byzantine: int, keep: int = 1) -> list[int]:
    """Indices of the ``keep`` rows of lowest Krum score (ties: lower index);
    ``keep = 1`` is Krum, ``keep > 1`` Multi-Krum's selection.

    Raises:
        ValueError: if ``keep`` is not in [1, K].
    """
    scores = krum_scores(x, byzantine)
    if not 1 <= keep <= scores.size:
        raise ValueError(f"keep must be in [1, {scores.size}], got {keep}")
    return [int(i) for i in np.argsort(scores, kind="stable")[:keep]]


def clip_rows(x: np.ndarray, bound: float) -> tuple[Float64Array, Float64Array]:
    """Each row scaled to L2 norm ≤ ``bound``; the clipped rows and the original
    norms.

    Raises:
        ValueError: if ``bound`` is not a finite number > 0.
    """
    if not (np.isfinite(bound) and bound > 0):
        raise ValueError(f"the norm bound must be a finite number > 0, got {bound}")
    m = _rows(x)
    norms = np.linalg.norm(m, axis=1)
    factor = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return m * factor[:, None], norms


def robust_class_sums(
    sums: np.ndarray,
    counts: np.ndarray,
    estimate: Callable[[np.ndarray], Float64Array] = coordinate_median,
) -> Float64Array:
    """Class sums ``(C, d)`` whose class means are robust estimates.

    For each class c, ``estimate`` runs over the per-client means
    ``sums[k, c] / counts[k, c]`` of the clients with ``counts[k, c] > 0`` (one
    row each, whatever their counts: a claimed count is itself an attack
    surface), and the result is scaled back by the summed count ``Σ_k
    counts[k, c]``, so a head built from it sees the pooled counts and the
    robust means. A class no client holds keeps a zero sum.

    Args:
        sums: ``(K, C, d)`` per-client class feature sums.
        counts: ``(K, C)`` per-client class counts (any common positive scale).
        estimate: ``(rows, d) -> (d,)``, e.g. :func:`coordinate_median`.

    Raises:
        ValueError: if the shapes do not pair up or a value is not finite.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.ndim != 3 or counts.shape != sums.shape[:2]:
        raise ValueError(
            f"class sums {sums.shape} and counts {counts.shape} do not pair up as "
            "(clients, classes, dims) and (clients, classes)"
        )
    if not (np.isfinite(sums).all() and np.isfinite(counts).all()):
        raise ValueError("class statistics hold NaN or infinite values")
    out = np.zeros(sums.shape[1:], dtype=np.float64)
    for c in range(sums.shape[1]):
        held = counts[:, c] > 0
        if held.any():
            means = sums[held, c] / counts[held, c, None]
            out[c] = estimate(means) * counts[:, c].sum()
    return out
