"""Secure aggregation and client-level DP in the round loop (fedpeft.server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedpeft.config import ConfigError
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.privacy import PrivacyAccountant, client_level_event
from fedpeft.server.build import build_aggregator, strategy_from_config
from fedpeft.types import ClientUpdate
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def _updates(rng: np.random.Generator, sizes: list[int]) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            k,
            {
                "w": rng.normal(0, 0.05, (6, 4)).astype(np.float32),
                "b": rng.normal(0, 0.05, 3).astype(np.float32),
            },
            n,
        )
        for k, n in enumerate(sizes)
    ]


def _merge(cfg, updates: list[ClientUpdate]):  # type: ignore[no-untyped-def]
    """The server's merge of ``updates`` from zero parameters under ``cfg``."""
    strategy = strategy_from_config(cfg)
    agg = build_aggregator(cfg, strategy, total_examples=100)
    params = {k: np.zeros_like(v) for k, v in updates[0].delta.items()}
    new, metrics = agg.merge(1, params, updates, strategy)
    return ClientUpdate(-1, new, 0), metrics


def test_secagg_mean_equals_the_plain_weighted_mean(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "privacy.secagg=true")
    updates = _updates(np.random.default_rng(0), [10, 30, 60])
    params = {k: np.zeros_like(v) for k, v in updates[0].delta.items()}

    pseudo, metrics = _merge(cfg, updates)

    weights = np.array([10, 30, 60]) / 100
    for key in params:
        expected = sum(w * u.delta[key] for w, u in zip(weights, updates, strict=True))
        np.testing.assert_allclose(
            pseudo.delta[key], expected / weights.sum(), atol=1e-6
        )
    assert metrics["secagg_passes"] == 1
    assert metrics["secagg_bytes_up"] > 3 * 4 * 27  # masked vectors + key material


def test_dynamic_under_secagg_matches_the_formula(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        "privacy.secagg=true",
        "strategy.name=dynamic",
        "strategy.distance_scale=none",
        "strategy.gamma=20",
    )
    rng = np.random.default_rng(1)
    updates = _updates(rng, [20, 30, 50])

    pseudo, metrics = _merge(cfg, updates)

    flat = [
        np.concatenate([u.delta[k].ravel() for k in sorted(u.delta)]) for u in updates
    ]
    mean = np.mean(flat, axis=0)
    d = np.array([np.linalg.norm(f - mean) for f in flat])
    w = np.array([20, 30, 50]) / 100 * np.exp(-20 * d)
    expected = sum(wk * f for wk, f in zip(w, flat, strict=True)) / w.sum()
    got = np.concatenate([pseudo.delta[k].ravel() for k in sorted(pseudo.delta)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert metrics["secagg_passes"] == 2  # the mean, then the weighted sum


def test_engine_with_secagg_tracks_the_plain_run(tmp_path: Path) -> None:
    plain = FederatedRun(build_experiment(tiny_config(tmp_path))).run()
    secure = FederatedRun(
        build_experiment(tiny_config(tmp_path, "privacy.secagg=true"))
    ).run()
    for key, value in plain.params.items():
        np.testing.assert_allclose(secure.params[key], value, atol=1e-4)


def test_client_dp_reports_epsilon_matching_dp_accounting(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        "peft.head_init=zeros",
        "strategy.name=fedprompt",
        "federation.rounds=3",
        "privacy.client_dp={noise_multiplier=1.1, clip_norm=0.5}",
    )
    result = FederatedRun(build_experiment(cfg)).run()

    oracle = PrivacyAccountant("rdp", 1e-3)
    event = client_level_event(1.1, "fixed", num_clients=4, clients_per_round=2)
    for record in result.history[1:]:
        oracle.compose(event)
        assert record["epsilon"] == pytest.approx(oracle.epsilon(1e-3))


def test_target_epsilon_stops_before_the_budget_is_exceeded(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        "peft.head_init=zeros",
        "strategy.name=fedprompt",
        "federation.rounds=2",
        "privacy.client_dp={target_epsilon=3.0, clip_norm=0.5}",
    )
    run = FederatedRun(build_experiment(cfg))
    # Ask for more rounds than σ was calibrated for: the loop must stop.
    run.loop.settings = dataclasses.replace(run.loop.settings, rounds=6)
    result = run.run()
    assert result.history[-1]["round"] < 6
    assert max(r.get("epsilon", 0.0) for r in result.history) <= 3.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("privacy.client_dp={noise_multiplier=1.0}", "peft.head_init=zeros"),
            "fedavg",
        ),
        (
            ("privacy.client_dp={noise_multiplier=1.0}", "strategy.name=fedprompt"),
            "head_init",
        ),
        (
            (
                "privacy.client_dp={noise_multiplier=1.0, mode='distributed'}",
                "strategy.name=fedprompt",
                "peft.head_init=zeros",
            ),
            "privacy.secagg = true",
        ),
        (("privacy.secagg=true", "strategy.name=dynamic"), "median"),
    ],
)
def test_unsound_privacy_settings_are_refused(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg = tiny_config(tmp_path, *extra)
        build_aggregator(cfg, strategy_from_config(cfg), total_examples=100)


def test_record_dp_per_example_gradients_match_single_example_backprop(
    tiny_experiment,  # type: ignore[no-untyped-def]
) -> None:
    import torch
    import torch.nn.functional as F

    from fedpeft.client.dp_local import per_example_grads

    model = tiny_experiment.new_adapter()
    data = tiny_experiment.clients[0].train
    idx = np.arange(4)
    grads = per_example_grads(model, data, idx, "fp32")
    for i in range(4):
        model.zero_grad()
        one = data.batch(idx[i : i + 1])
        F.cross_entropy(model(one), one.labels).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None
            torch.testing.assert_close(grads[name][i], p.grad, atol=2e-6, rtol=1e-4)


def test_record_dp_run_reports_record_level_epsilon(tmp_path: Path) -> None:
    from fedpeft.client.dp_local import dp_plan
    from fedpeft.privacy import record_level_epsilon

    cfg = tiny_config(
        tmp_path,
        "federation.rounds=1",
        "privacy.record_dp={noise_multiplier=1.0, clip_norm=1.0}",
    )
    exp = build_experiment(cfg)
    result = FederatedRun(exp).run()

    record = result.history[1]
    worst = 0.0
    for k in record["clients"]:
        q, steps = dp_plan(len(exp.clients[k].train), cfg.client)
        worst = max(worst, record_level_epsilon(1.0, q, steps, 1e-4))
    assert record["record_epsilon_max"] == pytest.approx(worst)
    assert all(np.isfinite(v).all() for v in result.params.values())


def test_record_dp_runs_batched_and_sequential_agree(tmp_path: Path) -> None:
    """Clients batched under record-level DP-SGD: the same Poisson batches and
    noise as one after another, so the same global model within float
    tolerance and the same accounting."""
    results = {}
    for batched in (False, True):
        cfg = tiny_config(
            tmp_path,
            "federation.rounds=2",
            f"federation.batch_clients={str(batched).lower()}",
            "privacy.record_dp={noise_multiplier=1.0, clip_norm=0.5}",
        )
        results[batched] = FederatedRun(build_experiment(cfg)).run()
    alone, together = results[False], results[True]
    for name, value in alone.params.items():
        np.testing.assert_allclose(together.params[name], value, atol=1e-4)
    for a, b in zip(alone.history[1:], together.history[1:], strict=True):
        assert a["clients"] == b["clients"]
        assert a["record_epsilon_max"] == b["record_epsilon_max"]
