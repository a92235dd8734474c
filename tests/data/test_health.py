"""The synthetic healthcare federation: determinism, the risk model, hospitals
that differ, the notes, and per-group test accuracy in a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedpeft.config import ConfigError
from fedpeft.data import load_corpus
from fedpeft.data.health import (
    COMORBIDITIES,
    HOSPITALS,
    RISK_COEFFICIENTS,
    RISK_INTERCEPT,
    clinical_note,
    generate_patients,
    health_corpus,
    risk_features,
)
from fedpeft.metrics import group_accuracy, group_metrics
from tests.conftest import tiny_config


def test_the_generator_is_deterministic_for_a_seed() -> None:
    a = generate_patients(500, np.random.default_rng(7))
    b = generate_patients(500, np.random.default_rng(7))
    c = generate_patients(500, np.random.default_rng(8))
    assert a.columns.keys() == b.columns.keys()
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
    np.testing.assert_array_equal(a.outcome, b.outcome)
    assert not np.array_equal(a.columns["age"], c.columns["age"])
    assert health_corpus(300).train.texts == health_corpus(300).train.texts


def test_a_logistic_fit_recovers_the_risk_model() -> None:
    from sklearn.linear_model import LogisticRegression

    patients = generate_patients(150_000, np.random.default_rng(0))
    fit = LogisticRegression(C=np.inf, max_iter=2000).fit(
        risk_features(patients.columns), patients.outcome
    )
    want = np.array(list(RISK_COEFFICIENTS.values()))
    np.testing.assert_allclose(fit.coef_[0], want, atol=0.1)
    assert fit.intercept_[0] == pytest.approx(RISK_INTERCEPT, abs=0.1)


def test_hospitals_differ_in_size_population_and_outcome() -> None:
    patients = generate_patients(60_000, np.random.default_rng(1))
    where = patients.columns["hospital"]
    shares, ages, rates, white = [], [], [], []
    for h in HOSPITALS:
        mine = where == h.name
        shares.append(mine.mean())
        ages.append(patients.columns["age"][mine].mean())
        rates.append(patients.outcome[mine].mean())
        white.append((patients.columns["ethnicity"][mine] == "white").mean())
        assert set(patients.columns["region"][mine]) == {h.region}
    np.testing.assert_allclose(shares, [h.share for h in HOSPITALS], atol=0.01)
    assert max(shares) / min(shares) > 4  # quantity skew
    assert max(ages) - min(ages) > 20  # feature skew
    assert max(white) - min(white) > 0.6
    assert max(rates) - min(rates) > 0.25  # label skew
    assert 0.2 < patients.outcome.mean() < 0.4


def test_a_note_states_the_record() -> None:
    patients = generate_patients(400, np.random.default_rng(2))
    cols = patients.columns
    rng = np.random.default_rng(0)
    for i in range(400):
        note = clinical_note(cols, i, rng)
        assert note.startswith(f"{cols['age'][i]}-year-old {cols['sex'][i]}, ")
        assert f"SpO2 {cols['spo2'][i]:.0f}%" in note
        assert f"lactate {cols['lactate'][i]:.1f}" in note
        assert ("heart failure" in note) == bool(cols["heart_failure"][i])
        assert ("No chronic conditions" in note) == (
            not any(cols[c][i] for c in COMORBIDITIES)
        )
        breathless = "short of breath" in note or "desaturating" in note
        assert breathless == (cols["spo2"][i] < 92)


def test_bad_generator_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one patient"):
        generate_patients(0, np.random.default_rng(0))
    skewed = [dataclasses.replace(h, share=0.5) for h in HOSPITALS[:3]]
    with pytest.raises(ValueError, match="sum to 1"):
        generate_patients(10, np.random.default_rng(0), skewed)


def test_the_shipped_corpus_splits_by_hospital() -> None:
    from fedpeft.data.partition import PartitionInputs, partition_indices

    corpus = load_corpus("synthetic-health", max_train=4000, max_test=500)
    assert corpus.train.label_names == ("adverse", "stable")
    assert {"hospital", "sex", "ethnicity", "age_group"} <= set(corpus.test.metadata)
    shards = partition_indices(
        corpus.train.labels,
        8,
        "feature",
        seed=0,
        inputs=PartitionInputs(metadata=corpus.train.metadata),
        group_column="hospital",
    )
    hospitals = corpus.train.metadata["hospital"]
    assert sorted(len(set(hospitals[s])) for s in shards) == [1] * 8


def test_group_accuracy_by_hand() -> None:
    labels = np.array([0, 1, 1, 0, 1])
    preds = np.array([0, 1, 0, 0, 0])
    groups = np.array(["a", "b", "a", "b", "b"])
    assert group_accuracy(labels, preds, groups) == {"a": 0.5, "b": 2 / 3}
    with pytest.raises(ValueError, match="differ in length"):
        group_accuracy(labels, preds, groups[:2])
    sex = np.array(["f", "m", "f", "m", "m"])
    got = group_metrics(labels, preds, {"site": groups, "sex": sex}, ["site", "sex"])
    assert got == {
        "accuracy@site=a": 0.5,
        "accuracy@site=b": 2 / 3,
        "accuracy@sex=f": 0.5,
        "accuracy@sex=m": 2 / 3,
        "worst_group_accuracy": 0.5,
        "worst_group": "sex=f",  # the tie goes to the first in sorted order
    }
    assert group_metrics(labels, preds, {}, []) == {}


@pytest.mark.slow
def test_a_run_records_each_groups_accuracy(tmp_path: Path) -> None:
    from fedpeft.client.evaluate import evaluate
    from fedpeft.engine.simulation import FederatedRun
    from fedpeft.experiment import build_experiment

    cfg = tiny_config(
        tmp_path,
        "data.corpus=synthetic-health",
        "data.max_train=160",
        "data.max_test=120",
        "federation.rounds=1",
        'federation.eval_groups=["sex", "age_group"]',
    )
    exp = build_experiment(cfg)
    result = FederatedRun(exp).run()
    last = result.history[-1]
    preds = evaluate(result.model, exp.test).predictions
    assert preds is not None
    meta = exp.corpus.test.metadata
    for column in ("sex", "age_group"):
        for group, acc in group_accuracy(exp.test.labels, preds, meta[column]).items():
            assert last[f"test_accuracy@{column}={group}"] == pytest.approx(acc)
    scores = {k: v for k, v in last.items() if k.startswith("test_accuracy@")}
    assert last["test_worst_group_accuracy"] == min(scores.values())
    assert scores[f"test_accuracy@{last['test_worst_group']}"] == min(scores.values())
    from fedpeft.baselines.centralized import run_centralized
    from fedpeft.baselines.local_only import run_local_only
    from fedpeft.baselines.probe import run_linear_probe

    pooled = run_centralized(exp, budget_examples=64, rounds=1)[-1]
    alone = run_local_only(exp)
    probe = run_linear_probe(exp)
    for record in (pooled, alone, probe):
        assert 0 <= record["test_worst_group_accuracy"] <= record["test_accuracy"]
        assert {k for k in record if k.startswith("test_accuracy@")} == set(scores)
    bad = tiny_config(tmp_path, 'federation.eval_groups=["hospitl"]')
    with pytest.raises(ConfigError, match=r"hospitl.*columns are"):
        build_experiment(bad)
