"""Robust estimates against hand values and at their breakdown points."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.aggregation.robust import (
    clip_rows,
    coordinate_median,
    krum_max_byzantine,
    krum_scores,
    krum_select,
    robust_class_sums,
    trim_count,
    trimmed_mean,
)


def test_median_and_trimmed_mean_by_hand() -> None:
    x = np.array([[1.0, 10.0], [2.0, -4.0], [3.0, 0.0], [100.0, 1.0], [4.0, 2.0]])
    np.testing.assert_array_equal(coordinate_median(x), [3.0, 1.0])
    # β = 0.2 of 5 rows: one dropped at each end per coordinate
    np.testing.assert_allclose(trimmed_mean(x, 0.2), [(2 + 3 + 4) / 3, (0 + 1 + 2) / 3])
    np.testing.assert_allclose(trimmed_mean(x, 0.0), x.mean(axis=0))
    np.testing.assert_array_equal(coordinate_median(x[:4]), [2.5, 0.5])  # even K


def test_trim_count_and_bad_trim() -> None:
    assert trim_count(10, 0.1) == 1
    assert trim_count(10, 0.3) == 3
    assert trim_count(9, 0.1) == 0
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trim_count(10, 0.5)


def test_krum_scores_by_hand() -> None:
    # rows on a line: 0, 1, 2, 10 ; f = 0 → K - f - 2 = 2 nearest neighbours
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    np.testing.assert_allclose(krum_scores(x, 0), [1 + 4, 1 + 1, 1 + 4, 64 + 81])
    assert krum_select(x, 0) == [1]
    assert krum_select(x, 0, keep=3) == [1, 0, 2]
    assert krum_max_byzantine(7) == 2
    assert krum_max_byzantine(2) == 0


def test_clip_rows() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped, norms = clip_rows(x, 1.0)
    np.testing.assert_allclose(norms, [5.0, 0.5, 0.0])
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    with pytest.raises(ValueError, match="> 0"):
        clip_rows(x, 0.0)


def test_nan_rows_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        coordinate_median(np.array([[1.0], [np.nan]]))


def _honest(k: int, d: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(1.0, 0.1, size=(k, d))


@pytest.mark.parametrize("k", [5, 8, 11])
def test_median_breakdown_point(k: int) -> None:
    """⌈K/2⌉ − 1 outliers at any value leave every coordinate inside the honest
    range; ⌈K/2⌉ of them move it past the range (arbitrarily far)."""
    limit = (k + 1) // 2 - 1
    for outlier in (1e6, -1e6):
        x = _honest(k)
        honest = x[limit:]
        x[:limit] = outlier
        est = coordinate_median(x)
        assert np.all(est >= honest.min(axis=0)) and np.all(est <= honest.max(axis=0))
        x[: limit + 1] = outlier
        if k % 2 == 1:  # odd K: the median is then an outlier value
            assert np.all(np.abs(coordinate_median(x)) >= 1e6)
        else:  # even K: the mean of the two middle values, one of them an outlier
            assert np.all(np.abs(coordinate_median(x)) > 1e5)


@pytest.mark.parametrize(("k", "trim"), [(10, 0.1), (10, 0.3), (20, 0.25)])
def test_trimmed_mean_breakdown_point(k: int, trim: float) -> None:
    """⌊βK⌋ outliers are trimmed away; one more breaks through."""
    b = trim_count(k, trim)
    x = _honest(k)
    lo, hi = x.min(axis=0), x.max(axis=0)
    x[:b] = 1e6
    est = trimmed_mean(x, trim)
    assert np.all(est >= lo) and np.all(est <= hi)
    x[: b + 1] = 1e6
    assert np.all(trimmed_mean(x, trim) > 1e6 / k / 2)


@pytest.mark.parametrize("k", [7, 9, 12])
def test_krum_breakdown_point(k: int) -> None:
    """With f ≤ (K − 3)/2 attackers, far away or clustered at an arbitrary
    point, Krum picks an honest row; Multi-Krum's m = K − f keep none of
    the far ones."""
    f = krum_max_byzantine(k)
    x = _honest(k)
    x[:f] = 50.0  # f colluders at one point: small distances among themselves
    chosen = krum_select(x, f)
    assert chosen[0] >= f
    kept = krum_select(x, f, keep=k - f)
    assert set(kept) == set(range(f, k))
    # K − f − 1 colluders at one point fill a whole scoring neighbourhood with
    # zero distances: Krum then selects a colluder
    bad = k - f - 1
    x[:bad] = 50.0
    assert krum_select(x, f)[0] < bad


def test_robust_class_sums_by_hand() -> None:
    # 3 clients, 2 classes, 2 dims. Class 0's per-client means: (1, 2), (3, 4)
    # and (100, -100) (a liar); client 2 holds no class 1.
    sums = np.array(
        [
            [[2.0, 4.0], [5.0, 5.0]],  # counts 2, 1 -> means (1, 2), (5, 5)
            [[9.0, 12.0], [14.0, 21.0]],  # counts 3, 7 -> means (3, 4), (2, 3)
            [[100.0, -100.0], [0.0, 0.0]],  # counts 1, 0
        ]
    )
    counts = np.array([[2.0, 1.0], [3.0, 7.0], [1.0, 0.0]])
    out = robust_class_sums(sums, counts)
    # class 0: median of the three means (3, 2) x 6 examples; class 1: the
    # median of two means (3.5, 4) x 8 examples.
    np.testing.assert_allclose(out, [[18.0, 12.0], [28.0, 32.0]])
    mean_out = robust_class_sums(sums, counts, lambda r: trimmed_mean(r, 0.0))
    np.testing.assert_allclose(
        mean_out[0], np.mean([[1, 2], [3, 4], [100, -100]], 0) * 6
    )
    # nobody holds a class: its sum stays zero
    assert not robust_class_sums(sums[:, :1] * 0, np.zeros((3, 1))).any()
    with pytest.raises(ValueError, match="do not pair up"):
        robust_class_sums(sums, counts[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        robust_class_sums(sums * np.nan, counts)
