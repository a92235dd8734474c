"""The exact class-means warm start (fedpeft.aggregation.class_means,
fedpeft.server.warm_start): the diagonal-LDA head against a hand computation,
and summed client statistics (plain, secure, in a federated run's round 0)
against the head of the pooled data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedpeft.aggregation.class_means import (
    ABSENT_BIAS,
    TEMPERATURES,
    calibrate_head,
    class_mean_head,
    class_statistics,
    nll_sums,
)
from fedpeft.client import probe
from fedpeft.client.feature_cache import pooled_features
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.secagg import SecAggConfig
from fedpeft.server.aggregators import (
    Aggregator,
    PlainAggregator,
    SecureAggregator,
    SecureSum,
)
from fedpeft.server.warm_start import merge_class_stats, stats_config
from fedpeft.types import ClientUpdate, Params
from tests.aggregation.helpers import warm_start_run


def test_head_is_the_hand_computed_diagonal_lda() -> None:
    features = np.array(
        [[1, 2], [3, 2], [-1, 0], [-3, 4], [-2, 2], [0, -1]], dtype=np.float64
    )
    labels = np.array([0, 0, 1, 1, 1, 2])  # class 3 absent
    # μ0 = (2, 2), μ1 = (−2, 2), μ2 = (0, −1); priors (1/3, 1/2, 1/6, 0).
    # Squared deviations from the class mean, summed: dim 0: 1+1+1+1+0+0 = 4,
    # dim 1: 0+0+4+4+0+0 = 8 -> pooled σ² = (4/6, 8/6) = (2/3, 4/3).
    # weight_c = μ_c / σ²: (3, 1.5), (−3, 1.5), (0, −0.75), absent (0, 0)
    # bias_c = −Σ_j μ_cj² / (2σ_j²) + log π_c:
    #   c0: −(4/(4/3) + 4/(8/3)) + log(1/3) = −4.5 − 1.0986123
    #   c1: −4.5 + log(1/2) = −4.5 − 0.6931472
    #   c2: −(0 + 1/(8/3)) + log(1/6) = −0.375 − 1.7917595
    head = class_mean_head(class_statistics(features, labels, 4))
    np.testing.assert_allclose(
        head["head.weight"],
        [[3.0, 1.5], [-3.0, 1.5], [0.0, -0.75], [0.0, 0.0]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        head["head.bias"],
        [-5.5986123, -5.1931472, -2.1667595, ABSENT_BIAS],
        rtol=1e-6,
    )
    assert head["head.weight"].dtype == head["head.bias"].dtype == np.float32
    assert math.log(1 / 6) == pytest.approx(-1.7917595, abs=1e-7)


def test_a_dimension_without_within_class_variance_gets_the_floor() -> None:
    # dim 1 is constant within each class: σ² = 0 -> floor 1e-3 · mean σ².
    features = np.array([[1, 5], [3, 5], [-1, -5], [-3, -5]], dtype=np.float64)
    labels = np.array([0, 0, 1, 1])
    # σ² = (1, 0) -> floored to (1, 1e-3 · 0.5) = (1, 5e-4)
    # weight_0 = (2/1, 5/5e-4) = (2, 1e4); bias_0 = −(4/2 + 25/1e-3) + log 0.5
    head = class_mean_head(class_statistics(features, labels, 2))
    np.testing.assert_allclose(
        head["head.weight"], [[2.0, 1e4], [-2.0, -1e4]], rtol=1e-6
    )
    np.testing.assert_allclose(head["head.bias"], [-25002.0 - 0.6931472] * 2, rtol=1e-6)


def test_bad_statistics_raise() -> None:
    stats = class_statistics(np.ones((3, 2)), np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="lack"):
        class_mean_head({k: v for k, v in stats.items() if k != "class_count"})
    with pytest.raises(ValueError, match="count no example"):
        class_mean_head({**stats, "class_count": np.zeros(2)})
    with pytest.raises(ValueError, match="do not pair up"):
        class_mean_head({**stats, "feature_sumsq": np.ones(3)})
    with pytest.raises(ValueError, match="NaN"):
        class_mean_head({**stats, "class_sum": np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        class_statistics(np.ones((2, 2)), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="do not pair up"):
        class_statistics(np.ones((2, 2)), np.array([0, 1, 1]), 2)


# A labelled data set split over three clients; client 1 lacks class 3.
RNG = np.random.default_rng(11)
LABELS = RNG.integers(0, 4, size=60)
FEATURES = RNG.normal(size=(60, 5)) + 2.0 * RNG.normal(size=(4, 5))[LABELS]
SPLIT = [np.arange(0, 25), np.arange(25, 45), np.arange(45, 60)]
SPLIT[1] = SPLIT[1][LABELS[SPLIT[1]] != 3]
SPLIT[2] = np.concatenate([SPLIT[2], np.setdiff1d(np.arange(25, 45), SPLIT[1])])
KEEP = np.concatenate(SPLIT)  # every example, each once (order changed)


def _pooled_head() -> Params:
    return class_mean_head(class_statistics(FEATURES[KEEP], LABELS[KEEP], 4))


def _assert_heads(got: Params, expected: Params) -> None:
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-5)


def test_split_is_a_disjoint_cover_and_client_1_lacks_a_class() -> None:
    assert sorted(KEEP) == list(range(60))
    assert 3 not in LABELS[SPLIT[1]] and 3 in LABELS[SPLIT[0]]


@given(st.integers(0, 2**16))
def test_summed_client_statistics_give_the_pooled_head(seed: int) -> None:
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, 4, size=len(LABELS))  # any split, empty clients too
    parts = [
        class_statistics(FEATURES[owner == k], LABELS[owner == k], 4) for k in range(4)
    ]
    total = {key: np.sum([p[key] for p in parts], axis=0) for key in parts[0]}
    expected = class_mean_head(class_statistics(FEATURES, LABELS, 4))
    _assert_heads(class_mean_head(total), expected)
    # One public scale on every statistic (1/Σn) leaves the head unchanged.
    scaled = {key: v / len(LABELS) for key, v in total.items()}
    _assert_heads(class_mean_head(scaled), expected)


def _replies() -> list[ClientUpdate]:
    """What each client sends: its statistics times the public 1/Σn, float32
    (as GradientClient.class_stats)."""
    scale = stats_config(len(KEEP))["stats_scale"]
    return [
        ClientUpdate(
            k,
            {
                key: (v * scale).astype(np.float32)
                for key, v in class_statistics(FEATURES[idx], LABELS[idx], 4).items()
            },
            len(idx),
        )
        for k, idx in enumerate(SPLIT)
    ]


@pytest.mark.parametrize(
    "aggregator",
    [
        PlainAggregator(),
        # Unit-variance features: the default 32-bit quantizer suffices here
        # (see test_secure_round_zero_head_at_default_bits for real features).
        SecureAggregator(SecureSum(SecAggConfig(secure=False), seed=0), 60),
    ],
    ids=["plain", "secure"],
)
def test_server_merge_of_client_statistics_equals_the_pooled_head(
    aggregator: Aggregator,
) -> None:
    body = {"prompt": np.ones((2, 5), np.float32)}
    start = {
        **body,
        "head.weight": np.zeros((4, 5), np.float32),
        "head.bias": np.zeros(4, np.float32),
    }
    params, metrics = merge_class_stats(aggregator, start, _replies())
    np.testing.assert_array_equal(params["prompt"], body["prompt"])
    _assert_heads({k: params[k] for k in ("head.weight", "head.bias")}, _pooled_head())
    if isinstance(aggregator, SecureAggregator):
        assert metrics["secagg_passes"] == 1
    with pytest.raises(ValueError, match="no client returned class statistics"):
        merge_class_stats(aggregator, start, [])


# ------------------------------------------------ a federated run's round 0
def _class_means_run(exp: Experiment, **privacy: object) -> FederatedRun:
    return warm_start_run(exp, "class-means", **privacy)


def _centralized_head(exp: Experiment, run: FederatedRun) -> Params:
    """The calibrated class-means head of the pooled training data (exp.train
    is the union of the clients' train splits) under the run's initial
    adapter: the diagonal-LDA head, divided by the grid temperature with the
    smallest NLL on the pooled data (computed here with torch's log-softmax)."""
    assert len(exp.train) == sum(len(c.train) for c in exp.clients)
    model = exp.new_adapter()
    model.load_trainable_state(run.loop.initial)
    cfg = exp.config
    feats = pooled_features(
        model, exp.train, cfg.federation.eval_batch_size, cfg.model.eval_precision
    ).double()
    head = class_mean_head(
        class_statistics(feats.numpy(), exp.train.labels, exp.num_classes)
    )
    logits = (
        feats @ torch.from_numpy(head["head.weight"]).double().T
        + torch.from_numpy(head["head.bias"]).double()
    )
    labels = torch.from_numpy(exp.train.labels)
    nll = [
        float(torch.nn.functional.cross_entropy(logits / t, labels, reduction="sum"))
        for t in TEMPERATURES
    ]
    t = float(TEMPERATURES[int(np.argmin(nll))])
    return {k: v / t for k, v in head.items()}


def test_calibration_picks_the_temperature_with_the_smallest_nll() -> None:
    """nll_sums against a hand computation; calibrate_head divides by the
    argmin temperature."""
    logits = np.array([[4.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    labels = np.array([0, 1, 1])
    temps = np.array([0.5, 1.0, 4.0])
    by_hand = [
        sum(
            math.log(sum(math.exp(z / t) for z in row)) - row[y] / t
            for row, y in zip(logits.tolist(), labels.tolist(), strict=True)
        )
        for t in temps
    ]
    sums = nll_sums(logits, labels, temps)
    np.testing.assert_allclose(sums, by_hand, rtol=1e-12)
    head = {"head.weight": np.array([[2.0, 4.0]]), "head.bias": np.array([8.0])}
    scaled, t = calibrate_head(head, sums, temps)
    assert t == temps[int(np.argmin(by_hand))]
    np.testing.assert_allclose(scaled["head.weight"], head["head.weight"] / t)
    with pytest.raises(ValueError, match="calibration sums"):
        calibrate_head(head, sums[:2], temps)


@pytest.mark.slow
def test_centralized_warm_start_equals_the_federated_one(
    tiny_experiment: Experiment,
) -> None:
    """The baselines' single-data-set warm start on the pooled data gives the
    federated round-0 head."""
    exp = tiny_experiment
    run = _class_means_run(exp)
    params, _ = run.initial_round()
    model = exp.new_adapter()
    state = probe.warm_start(
        "class-means",
        model,
        run.loop.initial,
        exp.train,
        exp.config.client,
        exp.config.model.eval_precision,
    )
    _assert_heads(
        {k: params[k] for k in ("head.weight", "head.bias")},
        {k: state[k] for k in ("head.weight", "head.bias")},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "privacy", [{}, {"secagg": True, "secagg_bits": 62}], ids=["plain", "secure-62"]
)
def test_round_zero_head_equals_the_centralized_class_mean_head(
    tiny_experiment: Experiment, privacy: dict[str, object]
) -> None:
    exp = tiny_experiment
    run = _class_means_run(exp, **privacy)
    params, record = run.initial_round()
    _assert_heads(
        {k: params[k] for k in ("head.weight", "head.bias")},
        _centralized_head(exp, run),
    )
    for k, v in run.loop.initial.items():  # only the head is set
        if not k.startswith("head."):
            np.testing.assert_array_equal(params[k], v)
    assert record["clients"] == list(range(len(exp.clients)))
    assert ("secagg_passes" in record) == bool(privacy)


@pytest.mark.slow
def test_secure_round_zero_head_at_default_bits(tiny_experiment: Experiment) -> None:
    """At the default privacy.secagg_bits = 32 the statistics pass still runs
    at 62 bits: the head is exact."""
    exp = tiny_experiment
    run = _class_means_run(exp, secagg=True)
    params, _ = run.initial_round()
    _assert_heads(
        {k: params[k] for k in ("head.weight", "head.bias")},
        _centralized_head(exp, run),
    )
