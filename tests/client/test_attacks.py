"""Attacks change what an attacker sends exactly as specified, in a real run
on the tiny experiment (same seed: the honest training is the same)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedpeft.aggregation import flatten, global_norm
from fedpeft.client.attacks import alie_z, choose_attackers, flipped_labels
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.types import ClientUpdate
from tests.conftest import tiny_config


def _replies(
    exp: Experiment, tmp_path: Path, *extra: str
) -> tuple[dict[int, ClientUpdate], FederatedRun]:
    """Round 1's replies of all four clients from the initial state."""
    cfg = tiny_config(tmp_path, "federation.update_norm_ratio=0", *extra)
    run = FederatedRun(dataclasses.replace(exp, config=cfg))
    loop = run.loop
    ins = loop.server.instructions(1, "fit", loop.initial, [0, 1, 2, 3])
    replies = loop.runtime.run(ins)
    return {r.client_id: r.update for r in replies if r.update is not None}, run


@pytest.fixture(scope="module")
def honest(
    tiny_experiment: Experiment, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, ClientUpdate]:
    return _replies(tiny_experiment, tmp_path_factory.mktemp("honest"))[0]


def test_attackers_are_seeded() -> None:
    a = choose_attackers(100, 0.3, seed=1)
    assert len(a) == 30 and a == choose_attackers(100, 0.3, seed=1)
    assert a != choose_attackers(100, 0.3, seed=2)
    assert len(choose_attackers(4, 0.1, seed=0)) == 1  # at least one
    assert choose_attackers(4, 0.0, seed=0) == frozenset()


def test_alie_z_by_hand() -> None:
    # n = 20, m = 6: s = ⌊20/2 + 1⌋ - 6 = 5, z = Φ⁻¹(15/20) = 0.6745
    assert alie_z(20, 6) == pytest.approx(0.67449, abs=1e-4)
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)  # s = 14: Φ⁻¹(36/50)
    np.testing.assert_array_equal(
        flipped_labels(np.array([0, 1, 2, 3]), 4), [3, 2, 1, 0]
    )


@pytest.mark.parametrize(("kind", "factor"), [("sign-flip", -3.0), ("scale", 3.0)])
def test_sign_flip_and_scale(
    kind: str,
    factor: float,
    honest: dict[int, ClientUpdate],
    tiny_experiment: Experiment,
    tmp_path: Path,
) -> None:
    got, run = _replies(
        tiny_experiment,
        tmp_path,
        f"attack.kind={kind}",
        "attack.fraction=0.5",
        "attack.scale=3",
        "attack.claim_examples=1000000",
    )
    assert len(run.attackers) == 2
    for k, u in got.items():
        if k in run.attackers:
            want = factor * flatten(honest[k].delta)
            np.testing.assert_allclose(flatten(u.delta), want, rtol=1e-5, atol=1e-7)
            assert u.num_examples == 1_000_000
        else:
            np.testing.assert_allclose(
                flatten(u.delta), flatten(honest[k].delta), atol=1e-7
            )
            assert u.num_examples == honest[k].num_examples


def test_noise(
    honest: dict[int, ClientUpdate], tiny_experiment: Experiment, tmp_path: Path
) -> None:
    got, run = _replies(
        tiny_experiment,
        tmp_path,
        "attack.kind=noise",
        "attack.fraction=0.25",
        "attack.scale=5",
    )
    (k,) = run.attackers
    ratio = global_norm(got[k].delta) / global_norm(honest[k].delta)
    assert 4.5 < ratio < 5.5
    cos = np.dot(flatten(got[k].delta), flatten(honest[k].delta)) / (
        global_norm(got[k].delta) * global_norm(honest[k].delta)
    )
    assert abs(cos) < 0.2  # a random direction, not the honest one


def test_alie_sends_mean_minus_z_std(
    honest: dict[int, ClientUpdate], tiny_experiment: Experiment, tmp_path: Path
) -> None:
    got, run = _replies(
        tiny_experiment, tmp_path, "attack.kind=alie", "attack.fraction=0.5"
    )
    bad = sorted(run.attackers)
    rows = np.stack([flatten(honest[k].delta) for k in bad])
    z = alie_z(4, 2)
    want = rows.mean(0) - z * rows.std(0, ddof=1)
    for k in bad:
        np.testing.assert_allclose(flatten(got[k].delta), want, rtol=1e-4, atol=1e-7)


def test_label_flip_trains_on_flipped_labels(
    honest: dict[int, ClientUpdate], tiny_experiment: Experiment, tmp_path: Path
) -> None:
    got, run = _replies(
        tiny_experiment, tmp_path, "attack.kind=label-flip", "attack.fraction=0.25"
    )
    (k,) = run.attackers
    c = tiny_experiment.num_classes
    np.testing.assert_array_equal(
        run.client_data(k).train.labels,
        c - 1 - tiny_experiment.clients[k].train.labels,
    )
    assert not np.allclose(flatten(got[k].delta), flatten(honest[k].delta))
    other = next(j for j in got if j not in run.attackers)
    np.testing.assert_allclose(
        flatten(got[other].delta), flatten(honest[other].delta), atol=1e-7
    )


def test_robust_median_keeps_a_round_inside_the_honest_range(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    """A whole round of the loop: one of four clients sends 100× its update;
    under the median the global step stays inside the honest updates' range."""
    cfg = tiny_config(
        tmp_path,
        "federation.update_norm_ratio=0",
        "attack.kind=scale",
        "attack.fraction=0.25",
        "attack.scale=100",
        "robust.rule=median",
        "strategy.fraction_fit=1.0",
    )
    run = FederatedRun(dataclasses.replace(tiny_experiment, config=cfg))
    start = run.loop.initial
    ins = run.loop.server.instructions(1, "fit", start, [0, 1, 2, 3])
    replies = {r.client_id: r.update for r in run.loop.runtime.run(ins)}
    new, record = run.run_round(1, start)
    step = flatten(new) - flatten(start)
    rows = np.stack(
        [flatten(u.delta) for k, u in replies.items() if k not in run.attackers]
    )
    assert np.all(step >= rows.min(0) - 1e-6) and np.all(step <= rows.max(0) + 1e-6)
    assert record["robust_rule"] == "median"


def test_flower_refuses_alie_and_runs_the_other_attacks(tmp_path: Path) -> None:
    pytest.importorskip("flwr")
    from fedpeft.config import ConfigError
    from fedpeft.flower.server_app import check_flower_config

    flower = ("federation.eval_clients=false", "attack.fraction=0.25")
    with pytest.raises(ConfigError, match="collude"):
        check_flower_config(tiny_config(tmp_path, *flower, "attack.kind=alie"))
    check_flower_config(tiny_config(tmp_path, *flower, "attack.kind=sign-flip"))


def test_summary_names_the_rule_and_the_attackers(tmp_path: Path) -> None:
    from fedpeft.engine.summary import threat_summary

    assert threat_summary(tiny_config(tmp_path)) == {}
    cfg = tiny_config(
        tmp_path, "robust.rule=median", "attack.kind=noise", "attack.fraction=0.5"
    )
    got = threat_summary(cfg)
    assert got["robust"]["rule"] == "median"
    assert got["attack"]["kind"] == "noise"
    assert got["attack"]["attackers"] == sorted(choose_attackers(4, 0.5, cfg.seed))


def test_robust_warm_start_reaches_round_zero(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    """Under label flipping, ``robust.warm_start = "rule"`` gives round 0 a
    head of its own (the median's class means), reported in round 0's metrics;
    the default keeps the summed statistics."""
    heads, records = [], []
    for warm_start in ("mean", "rule"):
        cfg = tiny_config(
            tmp_path / warm_start,
            "attack.kind=label-flip",
            "attack.fraction=0.25",
            "robust.rule=median",
            f"robust.warm_start={warm_start}",
            "federation.rounds=0",
        )
        run = FederatedRun(dataclasses.replace(tiny_experiment, config=cfg))
        result = run.run()
        records.append(result.history[0])
        heads.append(result.params["head.weight"])
    assert "robust_warm_start" not in records[0]
    assert records[1]["robust_warm_start"] == "median"
    assert not np.allclose(heads[0], heads[1])
