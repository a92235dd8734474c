"""Robust aggregation around the strategies, and where the config refuses it."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.aggregation import flatten
from fedpeft.aggregation.class_means import (
    CLASS_COUNT,
    CLASS_SUM,
    FEATURE_SUMSQ,
    class_moments,
)
from fedpeft.config import ConfigError, load_config
from fedpeft.config_threats import RobustSection
from fedpeft.secagg import SecAggConfig
from fedpeft.server.aggregators import PlainAggregator, SecureAggregator, SecureSum
from fedpeft.server.build import build_aggregator
from fedpeft.server.robust import RobustAggregator
from fedpeft.strategies import build_strategy
from fedpeft.types import ClientUpdate

PARAMS = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}


def _updates(
    rows: list[list[float]], sizes: list[int] | None = None
) -> list[ClientUpdate]:
    sizes = sizes or [10] * len(rows)
    return [
        ClientUpdate(
            k, {"b": np.array(r[:1], np.float32), "w": np.array(r[1:], np.float32)}, n
        )
        for k, (r, n) in enumerate(zip(rows, sizes, strict=True))
    ]


ROWS = [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1000, -1000, 1000, 5]]


def _merge(
    rule: str, rows: list[list[float]] = ROWS, **options: float
) -> tuple[np.ndarray, dict]:
    agg = RobustAggregator(RobustSection(rule=rule, **options))
    new, metrics = agg.merge(1, PARAMS, _updates(rows), build_strategy("fedavg"))
    return flatten(new), metrics


def test_median_and_trimmed_mean_step_by_the_estimate() -> None:
    est, metrics = _merge("median")
    # b, then w (sorted keys); w[0]'s column is 1, 2, 3, -1000
    np.testing.assert_allclose(est, [2.5, 1.5, 2.5, 2.5])
    assert metrics["robust_rule"] == "median"
    est, metrics = _merge("trimmed-mean", trim=0.25)
    np.testing.assert_allclose(est, [2.5, 1.5, 2.5, 2.5])
    assert metrics["robust_trimmed_each_end"] == 1


def test_krum_and_multi_krum_keep_the_honest_updates() -> None:
    rows = [*ROWS[:3], [1.5, 1.5, 1.5, 1.5], [2.5, 2.5, 2.5, 2.5], ROWS[3]]
    est, metrics = _merge("krum", rows, byzantine=0.2)
    assert metrics["robust_f"] == 1 and metrics["robust_keep"] == 1
    assert metrics["robust_kept_clients"][0] in (0, 1, 2, 3, 4)
    est, metrics = _merge("multi-krum", rows, byzantine=0.2)
    assert sorted(metrics["robust_kept_clients"]) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(est, [2.0] * 4)  # FedAvg over the kept (equal n)


def test_krum_lowers_f_when_the_round_is_small(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, metrics = _merge("krum", ROWS, byzantine=0.45)
    assert metrics["robust_f"] == 0  # K = 4 allows f <= 0
    assert "lowered" in caplog.text


def test_norm_bound_clips_to_the_median_norm_then_averages() -> None:
    est, metrics = _merge("norm-bound", norm_ratio=1.0)
    norms = [np.linalg.norm(r) for r in ROWS]
    bound = float(np.median(norms))
    assert metrics["robust_bound"] == pytest.approx(bound)
    assert metrics["robust_clipped_fraction"] == 0.5
    rows = np.array(ROWS, float)
    clipped = rows * np.minimum(1, bound / np.array(norms))[:, None]
    np.testing.assert_allclose(est, clipped.mean(axis=0), rtol=1e-6)
    assert np.linalg.norm(est) <= bound + 1e-5


def test_mean_rule_is_the_strategy_merge() -> None:
    plain, _ = PlainAggregator().merge(
        1, PARAMS, _updates(ROWS), build_strategy("fedavg")
    )
    est, _ = _merge("mean")
    np.testing.assert_allclose(est, flatten(plain))


def test_secure_client_bound_equals_the_clipped_mean() -> None:
    secure = SecureSum(SecAggConfig(clip_range=8.0, threshold=2, secure=False), seed=0)
    agg = SecureAggregator(secure, total_examples=40, client_bound=2.0)
    rows = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 100]]
    new, _ = agg.merge(1, PARAMS, _updates(rows), build_strategy("fedavg"))
    expected = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]).mean(
        0
    )
    np.testing.assert_allclose(flatten(new), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["robust.rule=median", "privacy.secagg=true"], "hides from the server"),
        (["robust.rule=norm-bound", "privacy.secagg=true"], "max_norm > 0"),
        (
            [
                "robust.rule=krum",
                "privacy.client_dp.noise_multiplier=1.0",
                "peft.head_init=zeros",
            ],
            "DP-FedAvg already bounds",
        ),
        (["attack.kind=alie"], "attack.fraction > 0"),
        (["attack.fraction=0.2"], "attack.kind = 'none'"),
        (
            [
                "attack.kind=alie",
                "attack.fraction=0.2",
                "federation.batch_clients=false",
            ],
            "batch_clients = true",
        ),
        (["robust.rule=medain"], "robust.rule"),
        (["robust.warm_start=rule"], "robust.rule is 'mean'"),
        (
            ["robust.warm_start=rule", "robust.rule=median", "peft.head_init=probe"],
            "head_init is 'probe'",
        ),
        (
            [
                "robust.warm_start=rule",
                "robust.rule=norm-bound",
                "robust.max_norm=1.0",
                "privacy.secagg=true",
            ],
            "class statistics in the clear",
        ),
    ],
)
def test_config_refusals(extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, extra)


def test_build_picks_the_aggregator() -> None:
    strategy = build_strategy("fedavg")
    cfg = load_config(None, ["robust.rule=trimmed-mean"])
    assert isinstance(build_aggregator(cfg, strategy, 100), RobustAggregator)
    cfg = load_config(
        None, ["robust.rule=norm-bound", "robust.max_norm=0.5", "privacy.secagg=true"]
    )
    agg = build_aggregator(cfg, strategy, 100)
    assert isinstance(agg, SecureAggregator) and agg.client_bound == 0.5


def _stats(means: list[list[float]], counts: list[list[float]]) -> list[dict]:
    """Per-client class statistics with the given class means and counts."""
    out = []
    for m, n in zip(means, counts, strict=True):
        n_arr = np.array(n)
        out.append(
            {
                CLASS_SUM: np.array(m).reshape(len(n), -1) * n_arr[:, None],
                CLASS_COUNT: n_arr,
                FEATURE_SUMSQ: np.full(2, float(n_arr.sum())),
            }
        )
    return out


@pytest.mark.parametrize(
    ("rule", "expected"), [("median", [2.0, -2.0]), ("trimmed-mean", [2.0, -2.0])]
)
def test_warm_start_rule_gives_robust_class_means(
    rule: str, expected: list[float]
) -> None:
    # 5 clients hold class 0 (means 1, 2, 3 honest, two liars at -50 / +50 on
    # dim 0); every client holds class 1 at the same mean (0, 0).
    stats = _stats(
        [[1, -2, 0, 0], [2, -2, 0, 0], [3, -2, 0, 0], [-50, -2, 0, 0], [50, -2, 0, 0]],
        [[4, 2], [4, 2], [4, 2], [4, 2], [4, 2]],
    )
    options = {"trim": 0.2} if rule == "trimmed-mean" else {}
    robust = RobustAggregator(RobustSection(rule=rule, warm_start="rule", **options))
    total, metrics = robust.sum(0, stats)
    means, *_ = class_moments(total)
    np.testing.assert_allclose(means[0], expected)
    np.testing.assert_allclose(means[1], [0.0, 0.0])
    assert metrics["robust_warm_start"] == rule
    # the label-independent statistics and the counts stay exact sums
    plain, _ = PlainAggregator().sum(0, stats)
    for key in (CLASS_COUNT, FEATURE_SUMSQ):
        np.testing.assert_array_equal(total[key], plain[key])
    # warm_start = "mean" (the default): the plain sum, whatever the rule
    summed, _ = RobustAggregator(RobustSection(rule=rule, **options)).sum(0, stats)
    np.testing.assert_array_equal(summed[CLASS_SUM], plain[CLASS_SUM])
    # arrays that are not class statistics (the calibration's NLL sums) add up
    nll, _ = robust.sum(0, [{"nll_sums": np.ones(3)}] * 4)
    np.testing.assert_array_equal(nll["nll_sums"], np.full(3, 4.0))
