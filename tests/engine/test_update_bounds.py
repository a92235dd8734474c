"""A poisoned or malformed client update is dropped, never the run.

On the code before the round loop, a 1e30 update passed validation and
poisoned the global model (sequential runs went NaN and rejected every later
update; batched runs aborted), and a negative example count aborted the run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fedpeft.client.algorithm as algorithm
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.types import ClientUpdate

pytestmark = pytest.mark.slow


def _with(exp: Experiment, **federation: object) -> Experiment:
    cfg = exp.config.model_copy(
        update={
            "federation": exp.config.federation.model_copy(update=federation),
            "strategy": exp.config.strategy.model_copy(update={"fraction_fit": 1.0}),
        }
    )
    return dataclasses.replace(exp, config=cfg)


def _poison(update: ClientUpdate, huge: bool) -> ClientUpdate:
    if update.client_id != 0:
        return update
    if huge:
        delta = {k: np.full_like(v, 1e30) for k, v in update.delta.items()}
        return dataclasses.replace(update, delta=delta)
    return dataclasses.replace(update, num_examples=-5)


@pytest.mark.parametrize(
    ("batched", "huge"),
    [(False, True), (True, True), (True, False)],
    ids=["sequential-1e30", "batched-1e30", "batched-negative-n"],
)
def test_a_bad_update_is_dropped_and_the_run_goes_on(
    tiny_experiment: Experiment,
    monkeypatch: pytest.MonkeyPatch,
    batched: bool,
    huge: bool,
) -> None:
    real_one, real_finish = algorithm.local_update, algorithm.finish_update
    monkeypatch.setattr(
        algorithm, "local_update", lambda *a, **k: _poison(real_one(*a, **k), huge)
    )
    monkeypatch.setattr(
        algorithm, "finish_update", lambda *a, **k: _poison(real_finish(*a, **k), huge)
    )
    exp = _with(tiny_experiment, batch_clients=batched, rounds=2)

    result = FederatedRun(exp).run()

    for record in result.history[1:]:
        assert record["rejected_clients"] == [0]
        assert record["accepted_clients"] == [1, 2, 3]
        assert np.isfinite(record["test_loss"])
    assert all(
        np.isfinite(v).all() and np.abs(v).max() < 1e3 for v in result.params.values()
    )
    assert result.history[-1]["test_accuracy"] > 1 / exp.num_classes
