"""The ``lda`` warm start (fedpeft.aggregation.lda, fedpeft.server.warm_start):
shrunk-covariance heads against a hand computation and numpy's own covariance,
summed client statistics against the pooled data, the pick of shrinkage and
temperature, and a federated run's round 0 (plain and secure) against the
baselines' single-data-set head."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpeft.aggregation.class_means import (
    TEMPERATURES,
    class_mean_head,
    class_statistics,
    nll_sums,
)
from fedpeft.aggregation.lda import (
    CANDIDATE_WEIGHT,
    FEATURE_GRAM,
    SHRINKAGES,
    candidate_nll_sums,
    gram,
    pick_head,
    shrunk_heads,
    split_candidates,
    with_candidates,
)
from fedpeft.client import probe
from fedpeft.client.evaluate import concat_datasets
from fedpeft.config import ConfigError
from fedpeft.experiment import Experiment
from fedpeft.types import Params
from tests.aggregation.helpers import warm_start_run
from tests.conftest import tiny_config

RNG = np.random.default_rng(3)
LABELS = np.repeat(np.arange(3), [30, 20, 10])
# Correlated features: a shared random mixing of independent draws.
FEATURES = (RNG.normal(size=(60, 5)) + np.eye(3, 5)[LABELS] * 2.0) @ RNG.normal(
    size=(5, 5)
)


def _stats(features: np.ndarray, labels: np.ndarray, classes: int = 3) -> Params:
    stats = class_statistics(features, labels, classes)
    stats[FEATURE_GRAM] = gram(features)
    return stats


def _assert_heads(got: Params, expected: Params, tol: float = 1e-5) -> None:
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=tol, atol=tol)


def test_shrunk_head_is_the_hand_computed_lda() -> None:
    """Two classes in 2-D, λ = 0.5, worked by hand."""
    features = np.array([[1.0, 1.0], [3.0, 3.0], [-1.0, 1.0], [-3.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    # μ0 = (2, 2), μ1 = (−2, 0), π = (1/2, 1/2). Deviations from the class
    # means: (−1,−1), (1,1), (1,1), (−1,−1) -> Σ = [[1, 1], [1, 1]] (over n = 4).
    # Σ_0.5 = 0.5 Σ + 0.5 diag(Σ) = [[1, 0.5], [0.5, 1]]; its inverse is
    # (1/0.75) [[1, −0.5], [−0.5, 1]].
    # w0 = Σ⁻¹ μ0 = (1/0.75)(1, 1) = (4/3, 4/3); w1 = (1/0.75)(−2, 1) = (−8/3, 4/3)
    # b0 = −½ w0·μ0 + log ½ = −8/3 − log 2; b1 = −½ (16/3) − log 2 = −8/3 − log 2
    (head,) = shrunk_heads(_stats(features, labels, 2), [0.5])
    np.testing.assert_allclose(
        head["head.weight"], [[4 / 3, 4 / 3], [-8 / 3, 4 / 3]], rtol=1e-6
    )
    np.testing.assert_allclose(
        head["head.bias"], [-8 / 3 - np.log(2), -8 / 3 - np.log(2)], rtol=1e-6
    )


def test_shrinkage_one_is_the_diagonal_head_and_less_uses_the_covariance() -> None:
    stats = _stats(FEATURES, LABELS)
    heads = shrunk_heads(stats, [0.3, 1.0])
    _assert_heads(heads[1], class_mean_head(stats))
    # λ = 0.3 against numpy's covariance of the class-centred features
    means = np.stack([FEATURES[c == LABELS].mean(0) for c in range(3)])
    centred = FEATURES - means[LABELS]
    cov = np.cov(centred.T, bias=True)
    shrunk = 0.7 * cov + 0.3 * np.diag(np.diag(cov))
    weight = np.linalg.solve(shrunk, means.T).T
    prior = np.bincount(LABELS) / len(LABELS)
    bias = -0.5 * (weight * means).sum(1) + np.log(prior)
    _assert_heads(heads[0], {"head.weight": weight, "head.bias": bias}, tol=1e-4)


@given(st.integers(0, 2**16))
def test_summed_client_statistics_give_the_pooled_heads(seed: int) -> None:
    owner = np.random.default_rng(seed).integers(0, 4, size=len(LABELS))
    parts = [_stats(FEATURES[owner == k], LABELS[owner == k]) for k in range(4)]
    total = {key: np.sum([p[key] for p in parts], axis=0) for key in parts[0]}
    scaled = {key: v / len(LABELS) for key, v in total.items()}  # the public 1/Σn
    for got, expected in zip(
        shrunk_heads(scaled), shrunk_heads(_stats(FEATURES, LABELS)), strict=True
    ):
        _assert_heads(got, expected, tol=1e-4)


def test_pick_head_takes_the_smallest_validation_nll() -> None:
    heads = shrunk_heads(_stats(FEATURES, LABELS))
    val, val_labels = FEATURES[::3], LABELS[::3]
    sums = candidate_nll_sums(val, val_labels, heads)
    assert sums.shape == (len(SHRINKAGES), len(TEMPERATURES))
    k, t = np.unravel_index(np.argmin(sums), sums.shape)
    np.testing.assert_allclose(  # one candidate's row is nll_sums of its logits
        sums[k],
        nll_sums(val @ heads[k]["head.weight"].T + heads[k]["head.bias"], val_labels),
    )
    head, lam, temp = pick_head(heads, sums)
    assert (lam, temp) == (SHRINKAGES[k], TEMPERATURES[t])
    _assert_heads(head, {n: v / temp for n, v in heads[k].items()})
    with pytest.raises(ValueError, match="shape"):
        pick_head(heads, sums[:2])
    with pytest.raises(ValueError, match="val_fraction"):
        pick_head(heads, np.zeros_like(sums))


def test_candidates_ride_on_a_state_and_leave_it_whole() -> None:
    state = {"prompt": np.ones((2, 5), np.float32)}
    heads = shrunk_heads(_stats(FEATURES, LABELS))
    riding = with_candidates(state, heads)
    assert riding[CANDIDATE_WEIGHT].shape == (len(heads), 3, 5)
    rest, back = split_candidates(riding)
    assert rest.keys() == state.keys()
    for got, expected in zip(back, heads, strict=True):
        _assert_heads(got, expected)
    assert split_candidates(state) == (state, [])


def test_a_missing_gram_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match="Gram"):
        shrunk_heads(class_statistics(FEATURES, LABELS, 3))


def test_lda_without_validation_splits_is_refused(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        tiny_config(tmp_path, "peft.head_init=lda", "partition.val_fraction=0")


# ------------------------------------------------ a federated run's round 0
@pytest.mark.slow
@pytest.mark.parametrize(
    "privacy", [{}, {"secagg": True, "secagg_bits": 62}], ids=["plain", "secure-62"]
)
def test_round_zero_head_equals_the_pooled_lda_head(
    tiny_experiment: Experiment, privacy: dict[str, object]
) -> None:
    """Round 0's head equals the baselines' single-data-set lda head on the
    pooled training data, its shrinkage and temperature picked on the union of
    the clients' validation splits; the candidates do not stay in the state."""
    exp = tiny_experiment
    run = warm_start_run(exp, "lda", **privacy)
    params, record = run.initial_round()
    assert CANDIDATE_WEIGHT not in params
    assert record["warm_start_shrinkage"] in SHRINKAGES
    model = exp.new_adapter()
    state = probe.warm_start(
        "lda",
        model,
        run.loop.initial,
        exp.train,
        exp.config.client,
        exp.config.model.eval_precision,
        val=concat_datasets([c.val for c in exp.clients])[0],
    )
    _assert_heads(
        {k: params[k] for k in ("head.weight", "head.bias")},
        {k: state[k] for k in ("head.weight", "head.bias")},
        tol=1e-4,
    )
    assert ("secagg_passes" in record) == bool(privacy)
