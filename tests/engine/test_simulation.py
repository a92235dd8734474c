"""The embedded engine on a real (tiny) experiment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import fedpeft.client.algorithm as algorithm
import fedpeft.engine.simulation as simulation
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.rundir.checkpoint import CheckpointError
from fedpeft.rundir.sink import read_metrics
from fedpeft.types import ClientUpdate
from fedpeft.wire import serialize
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


class RunKilledError(Exception):
    pass


def _stop_after(rnd: int):  # type: ignore[no-untyped-def]
    def callback(record: dict) -> None:  # type: ignore[type-arg]
        if record["round"] == rnd:
            raise RunKilledError

    return callback


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "federation.rounds=3", "strategy.name=fedadam")
    exp = build_experiment(cfg)
    straight = FederatedRun(exp, run_dir=tmp_path / "a").run()

    with pytest.raises(RunKilledError):
        FederatedRun(exp, run_dir=tmp_path / "b", on_round=_stop_after(1)).run()
    resumed = FederatedRun(exp, run_dir=tmp_path / "b").run(resume=True)

    for key, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[key], value)
    drop = (
        "round_seconds",
        "train_seconds",
        "eval_seconds",
        "aggregate_seconds",
        "local_train_seconds_mean",
        "train_seconds_total",
    )
    clean = [{k: v for k, v in r.items() if k not in drop} for r in straight.history]
    again = [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]
    assert clean == again
    assert [r["round"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [
        0,
        1,
        2,
        3,
    ]


def test_same_seed_same_result_and_other_seed_differs(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    first = FederatedRun(tiny_experiment).run()
    second = FederatedRun(tiny_experiment).run()
    np.testing.assert_array_equal(first.params["prompt"], second.params["prompt"])


def test_bytes_are_the_serialized_payload(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    run = FederatedRun(tiny_experiment)
    params, _ = run.initial_round()
    _, record = run.run_round(1, params)
    blob = serialize(params)
    assert record["bytes_down_per_client"] == len(blob)
    assert record["bytes_down"] == len(blob) * len(record["clients"])
    # A delta has the payload's layout, so its serialized size is the same.
    assert record["bytes_up"] == len(blob) * len(record["clients"])


def test_faulty_client_update_is_rejected_and_round_continues(
    tiny_experiment, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    real = algorithm.local_update

    def faulty(client_id: int, *args, **kwargs) -> ClientUpdate:  # type: ignore[no-untyped-def]
        update = real(client_id, *args, **kwargs)
        if client_id == 0:
            delta = {k: np.full_like(v, np.nan) for k, v in update.delta.items()}
            return ClientUpdate(client_id, delta, update.num_examples, update.metrics)
        return update

    monkeypatch.setattr(algorithm, "local_update", faulty)
    cfg = tiny_experiment.config.model_copy(
        update={
            "strategy": tiny_experiment.config.strategy.model_copy(
                update={"fraction_fit": 1.0}
            ),
            "federation": tiny_experiment.config.federation.model_copy(
                update={"batch_clients": False}  # the path that calls local_update
            ),
        }
    )
    exp = simulation.Experiment(
        cfg,
        tiny_experiment.backbone,
        tiny_experiment.corpus,
        tiny_experiment.train,
        tiny_experiment.test,
        tiny_experiment.partition,
        tiny_experiment.clients,
    )
    run = FederatedRun(exp)
    params, _ = run.initial_round()
    new, record = run.run_round(1, params)
    assert record["rejected_clients"] == [0]
    assert record["agg_num_clients"] == len(exp.clients) - 1
    assert all(np.isfinite(v).all() for v in new.values())


def test_corrupt_checkpoint_is_reported(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "federation.rounds=1")
    exp = build_experiment(cfg)
    FederatedRun(exp, run_dir=tmp_path / "r").run()
    ckpt = next((tmp_path / "r" / "checkpoint").glob("round-*"))
    blob = (ckpt / "params.safetensors").read_bytes()
    (ckpt / "params.safetensors").write_bytes(blob[:-7] + b"garbage")

    with pytest.raises(CheckpointError, match="corrupt"):
        FederatedRun(exp, run_dir=tmp_path / "r").run(resume=True)


def test_federated_accuracy_rises_clearly_above_chance(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    result = FederatedRun(tiny_experiment).run()
    chance = 1.0 / tiny_experiment.num_classes  # 5 BBC topics: 0.2
    assert result.history[-1]["test_accuracy"] > chance + 0.4


def _with(exp: simulation.Experiment, **federation: object) -> simulation.Experiment:
    cfg = exp.config.model_copy(
        update={"federation": exp.config.federation.model_copy(update=federation)}
    )
    return dataclasses.replace(exp, config=cfg)


def test_batched_clients_give_the_sequential_run(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    sequential = FederatedRun(_with(tiny_experiment, batch_clients=False)).run()
    batched = FederatedRun(_with(tiny_experiment, batch_clients=True)).run()
    assert [r["clients"] for r in batched.history] == [
        r["clients"] for r in sequential.history
    ]
    for key, value in sequential.params.items():
        np.testing.assert_allclose(batched.params[key], value, rtol=1e-4, atol=1e-5)
    for a, b in zip(batched.history[1:], sequential.history[1:], strict=True):
        assert a["bytes_up"] == b["bytes_up"]
        assert a["train_examples_total"] == b["train_examples_total"]


def test_batched_training_that_fails_falls_back_to_sequential(
    tiny_experiment, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("out of memory in the batched step")

    monkeypatch.setattr(algorithm, "train_clients_batched", broken)
    run = FederatedRun(_with(tiny_experiment, batch_clients=True))
    params, _ = run.initial_round()
    _, record = run.run_round(1, params)
    assert record["clients"] and not record["failed_clients"]


def test_batch_clients_with_full_fine_tuning_trains_one_after_another(
    tmp_path: Path,
) -> None:
    cfg = tiny_config(
        tmp_path,
        "federation.rounds=1",
        "federation.batch_clients=true",
        "peft.method=full",
    )
    run = FederatedRun(build_experiment(cfg))
    assert not run.client.can_batch(None)  # no per-example forward
    params, _ = run.initial_round()
    _, record = run.run_round(1, params)
    assert record["clients"] and not record["failed_clients"]


def test_eval_clients_false_evaluates_the_test_set_only(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    """``federation.eval_clients = false`` skips the clients' validation pass;
    the test metrics are the same as with it."""
    exp = tiny_experiment
    cfg = exp.config
    quiet = dataclasses.replace(
        exp,
        config=cfg.model_copy(
            update={
                "federation": cfg.federation.model_copy(update={"eval_clients": False})
            }
        ),
    )
    state = exp.new_adapter().trainable_state()
    full = FederatedRun(exp).evaluator(state, None)
    test_only = FederatedRun(quiet).evaluator(state, None)
    assert "client_val_accuracy_mean" in full
    assert "client_val_accuracy_mean" not in test_only
    assert test_only["test_accuracy"] == full["test_accuracy"]
