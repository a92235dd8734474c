"""A bad client update is dropped with its reason; the round keeps the rest."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.server.screening import screen_updates
from fedpeft.types import ClientUpdate, Params

LAYOUT: Params = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}


def _update(k: int, scale: float, n: int = 10) -> ClientUpdate:
    rng = np.random.default_rng(k)
    delta = {
        name: (scale * rng.normal(size=v.shape)).astype(np.float32)
        for name, v in LAYOUT.items()
    }
    return ClientUpdate(k, delta, n)


def _refs(n: int) -> dict[int, Params]:
    return {k: LAYOUT for k in range(n)}


def test_huge_update_is_rejected_even_against_one_other_client() -> None:
    # the lower median of {1, 1e30} is 1: the pair's mean cannot hide it
    out = screen_updates([_update(0, 1.0), _update(1, 1e30)], _refs(2), 20.0)
    assert [u.client_id for u in out.accepted] == [0]
    assert "median" in out.rejected[1] and "update_norm_ratio" in out.rejected[1]


def test_norms_within_the_ratio_pass_and_zero_turns_the_bound_off() -> None:
    updates = [_update(0, 1.0), _update(1, 5.0), _update(2, 2.0)]
    assert len(screen_updates(updates, _refs(3), 20.0).accepted) == 3
    huge = [*updates, _update(3, 1e6)]
    assert sorted(screen_updates(huge, _refs(4), 20.0).rejected) == [3]
    assert len(screen_updates(huge, _refs(4), 0.0).accepted) == 4


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (ClientUpdate(1, {"w": LAYOUT["w"]}, 10), "wrong keys"),
        (ClientUpdate(1, {**LAYOUT, "w": np.zeros((3, 2), np.float32)}, 10), "shape"),
        (
            ClientUpdate(1, {**LAYOUT, "b": np.array([np.nan, 0], np.float32)}, 10),
            "NaN",
        ),
        (ClientUpdate(1, dict(LAYOUT), -5), "num_examples=-5"),
        (ClientUpdate(1, {**LAYOUT, "b": np.full(2, 3e38, np.float32)}, 10), "median"),
    ],
)
def test_malformed_updates_are_rejected_with_the_reason(
    bad: ClientUpdate, reason: str
) -> None:
    out = screen_updates([_update(0, 1.0), bad], _refs(2), 20.0)
    assert [u.client_id for u in out.accepted] == [0]
    assert reason in out.rejected[1]


def test_the_round_reports_its_largest_norm_over_the_lower_median() -> None:
    updates = [_update(0, 1.0), _update(1, 5.0), _update(2, 2.0), _update(3, 3.0)]
    norms = sorted(
        float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in u.delta.values())))
        for u in updates
    )
    out = screen_updates(updates, _refs(4), 20.0)
    assert out.max_norm_ratio == pytest.approx(norms[-1] / norms[1])  # lower median
    assert np.isnan(screen_updates(updates[:1], _refs(1), 20.0).max_norm_ratio)
