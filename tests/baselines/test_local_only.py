"""Local-only baseline: clients trained together equal clients trained alone."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpeft.baselines.local_only import local_models, run_local_only
from fedpeft.experiment import Experiment


def _with(exp: Experiment, *, batch_clients: bool, head_init: str) -> Experiment:
    cfg = exp.config.model_copy(
        update={
            "federation": exp.config.federation.model_copy(
                update={"batch_clients": batch_clients}
            ),
            "peft": exp.config.peft.model_copy(update={"head_init": head_init}),
        }
    )
    return dataclasses.replace(exp, config=cfg)


def test_batched_local_models_equal_one_after_another(
    tiny_experiment: Experiment,
) -> None:
    local_cfg = tiny_experiment.config.client.model_copy(update={"local_epochs": 2})
    states = {}
    for batched in (False, True):
        exp = _with(tiny_experiment, batch_clients=batched, head_init="probe")
        states[batched] = local_models(exp, exp.new_adapter(), local_cfg)
    start = tiny_experiment.new_adapter().trainable_state()
    assert len(states[True]) == len(tiny_experiment.clients)
    for alone, together in zip(states[False], states[True], strict=True):
        for name in start:
            assert np.abs(alone[name] - start[name]).max() > 1e-4, name
            np.testing.assert_allclose(together[name], alone[name], atol=5e-5)
    heads = {s["head.weight"].tobytes() for s in states[True]}
    assert len(heads) == len(tiny_experiment.clients)  # each client its own


def test_report_has_every_client(tiny_experiment: Experiment) -> None:
    exp = _with(tiny_experiment, batch_clients=True, head_init="zeros")
    out = run_local_only(exp)
    assert 0.0 <= out["test_accuracy_min"] <= out["test_accuracy"]
    assert out["test_accuracy"] <= out["test_accuracy_max"] <= 1.0
    assert out["local_epochs"] >= 1
