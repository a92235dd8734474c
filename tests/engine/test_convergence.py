"""Convergence figures of summary.json: rounds, bytes and client FLOPs to reach
centralized accuracy − 1 point, counted from round 1 (round 0 is the warm start)."""

from __future__ import annotations

from typing import Any

import pytest

from fedpeft.engine.loop import totals
from fedpeft.engine.simulation import FederatedResult
from fedpeft.engine.summary import (
    CONVERGENCE_RULE,
    convergence,
    convergence_target,
    rounds_to_reach,
    summarize,
)
from fedpeft.experiment import Experiment


def record(rnd: int, acc: float | None, **fields: Any) -> dict[str, Any]:
    """A round record as RoundLoop writes it (test accuracy only when evaluated)."""
    out: dict[str, Any] = {
        "run": "federated",
        "round": rnd,
        "clients": [0, 1],
        "bytes_up": 100,
        "bytes_down": 1_000,
        "client_flops_total": 5e9,
        **fields,
    }
    if acc is not None:
        out.update(test_accuracy=acc, test_macro_f1=acc)
    return out


def history() -> list[dict[str, Any]]:
    """Warm start already at 0.80; round 1 falls back; round 3 is the first
    evaluated round from 1 on at 0.80 (round 2 is not evaluated)."""
    return [
        record(0, 0.81, clients=[0, 1, 2, 3], bytes_up=40, bytes_down=4_000),
        record(1, 0.70, clients=[0, 1], bytes_up=200, bytes_down=2_000),
        record(
            2,
            None,
            clients=[2, 3],
            bytes_up=100,
            bytes_down=2_000,
            failed_clients=[3],
            client_flops_total=3e9,
        ),
        record(3, 0.82, clients=[0, 2], bytes_up=200, bytes_down=2_000),
        record(4, 0.90, clients=[0, 1]),
    ]


def test_rounds_to_reach_skips_the_warm_start_unless_asked() -> None:
    h = history()

    assert rounds_to_reach(h, 0.80) == 3
    assert rounds_to_reach(h, 0.80, from_round=0) == 0
    assert rounds_to_reach(h, 0.95) is None


def test_convergence_counts_from_round_1_even_when_round_0_meets_the_target() -> None:
    conv = convergence(history()[:2], 0.80)  # round 0 at 0.81, round 1 at 0.70

    assert conv["rounds"] is None
    assert conv["bytes"] is None
    assert conv["warm_start_accuracy"] == 0.81
    assert conv["warm_start_met_target"] is True


def test_convergence_cost_is_cumulative_over_rounds_1_to_the_reached_one() -> None:
    conv = convergence(history(), 0.80)

    assert conv["target"] == 0.80
    assert conv["rounds"] == 3
    # rounds 1..3, round 0's 4,040 bytes and round 4 left out
    assert conv["bytes"] == (200 + 2_000) + (100 + 2_000) + (200 + 2_000)
    # uploads: clients 0, 1, 2 sent (3 failed); downloads: clients 0..3 received
    assert conv["bytes_per_client"] == pytest.approx(500 / 3 + 6_000 / 4)
    assert conv["client_flops"] == 5e9 + 3e9 + 5e9


def test_convergence_never_reached_is_none_and_warm_start_below_target() -> None:
    conv = convergence(history(), 0.95)

    assert conv == {
        "target": 0.95,
        "rounds": None,
        "bytes": None,
        "bytes_per_client": None,
        "client_flops": None,
        "warm_start_accuracy": 0.81,
        "warm_start_met_target": False,
    }


def test_convergence_without_a_target_keeps_the_warm_start_accuracy() -> None:
    conv = convergence(history(), None)

    assert conv["rounds"] is None and conv["warm_start_met_target"] is None
    assert conv["warm_start_accuracy"] == 0.81


def test_convergence_target_is_centralized_minus_one_point() -> None:
    assert convergence_target(0.9) == pytest.approx(0.89)
    assert convergence_target(None) is None


@pytest.mark.parametrize(
    ("baselines", "target", "rounds"),
    [
        ({"centralized": {"test_accuracy": 0.83}}, 0.82, 3),
        ({}, None, None),
    ],
)
def test_summarize_writes_the_convergence_block(
    tiny_experiment: Experiment,
    baselines: dict[str, Any],
    target: float | None,
    rounds: int | None,
) -> None:
    h = history()
    fed = FederatedResult(h, {}, tiny_experiment.new_adapter(), totals(h))

    summary = summarize(tiny_experiment, fed, baselines, wall_seconds=1.0)

    conv = summary["federated"]["convergence"]
    assert "rounds_to_95pct_centralized" not in summary["federated"]
    assert conv["target_rule"] == CONVERGENCE_RULE
    assert conv["target"] == pytest.approx(target)
    assert conv["rounds"] == rounds
    assert conv["warm_start_accuracy"] == 0.81
