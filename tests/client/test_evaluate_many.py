"""Evaluating many data sets (and many clients' models) in one pass."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.client.evaluate import concat_datasets, evaluate, evaluate_many
from fedpeft.experiment import Experiment


def _assert_same(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.num_examples == e.num_examples
        if e.num_examples == 0:
            assert np.isnan(g.accuracy) and np.isnan(g.loss)
            continue
        assert g.accuracy == e.accuracy
        assert g.macro_f1 == e.macro_f1
        # batch composition changes fp32 summation order: 5.5e-5 on one host
        assert g.loss == pytest.approx(e.loss, abs=1e-4)


def test_concat_keeps_every_example_and_its_part(tiny_experiment: Experiment) -> None:
    parts = [c.train for c in tiny_experiment.clients[:3]]
    union, owner = concat_datasets(parts)
    assert len(union) == sum(len(p) for p in parts)
    for i, part in enumerate(parts):
        mine = union.subset(np.flatnonzero(owner == i))
        np.testing.assert_array_equal(mine.labels, part.labels)
        np.testing.assert_array_equal(mine.lengths, part.lengths)
        width = part.input_ids.shape[1]
        np.testing.assert_array_equal(mine.input_ids[:, :width], part.input_ids)


def test_one_model_on_many_sets_equals_one_by_one(tiny_experiment: Experiment) -> None:
    exp = tiny_experiment
    model = exp.new_adapter("prompt")
    empty = exp.test.subset(np.arange(0))
    sets = [exp.test, exp.clients[0].val, empty, exp.clients[1].val]
    expected = [evaluate(model, d, 16, "fp32") for d in sets]
    _assert_same(evaluate_many(model, sets, 16, "fp32"), expected)


@pytest.mark.parametrize("method", ["prompt", "prefix", "lora", "ia3", "bitfit"])
def test_each_set_scored_by_its_own_state(
    tiny_experiment: Experiment, method: str
) -> None:
    exp = tiny_experiment
    model = exp.new_adapter(method)
    base = model.trainable_state()
    rng = np.random.default_rng(0)
    states = [
        {
            n: (v + 0.5 * rng.standard_normal(v.shape)).astype(np.float32)
            for n, v in base.items()
        }
        for _ in range(3)
    ]
    sets = [exp.clients[k].train for k in range(3)]
    expected = []
    for state, data in zip(states, sets, strict=True):
        model.load_trainable_state(state)
        expected.append(evaluate(model, data, 16, "fp32"))
    model.load_trainable_state(base)  # its own tensors must not matter
    got = evaluate_many(model, sets, 16, "fp32", states=states)
    _assert_same(got, expected)
    assert len({r.loss for r in got}) == 3  # the states really differ


def test_states_must_match_the_sets(tiny_experiment: Experiment) -> None:
    model = tiny_experiment.new_adapter("prompt")
    with pytest.raises(ValueError, match="2 states for 1 data sets"):
        evaluate_many(
            model, [tiny_experiment.test], states=[model.trainable_state()] * 2
        )
