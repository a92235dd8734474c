"""Tests for fedpeft.devices.allocation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.devices import (
    ALLOCATION_POLICIES,
    GIB,
    AdapterOption,
    BackboneDims,
    ClientCost,
    DeviceProfile,
    allocate,
    analytic_cost_fn,
    build_menu,
    draw_profiles,
    excluded_by_fixed,
    round_time,
)

# Three options needing 1, 2, 3 GiB and 1e9, 2e9, 3e9 FLOPs; 100 params each way.
MENU = tuple(AdapterOption("lora", r, 100 * r) for r in (1, 2, 3))


def _table_cost(client: int, option: AdapterOption) -> ClientCost:
    r = option.size
    return ClientCost(r * GIB, r * 1e9, option.trainable_params * 4, 400)


def _device(memory_gib: float, speed: float = 1e9) -> DeviceProfile:
    return DeviceProfile(
        f"m{memory_gib}", "test", round(memory_gib * GIB), speed, 1e9, 1e9
    )


def _sizes(options: tuple[AdapterOption | None, ...]) -> list[int | None]:
    return [o.size if o else None for o in options]


PROFILES = [_device(0.5), _device(1.5), _device(2.5), _device(4.0)]


def test_largest_fit_picks_the_largest_option_in_memory() -> None:
    allocation = allocate("largest-fit", PROFILES, MENU, _table_cost)

    assert _sizes(allocation.options) == [None, 1, 2, 3]
    assert allocation.clients[0].reason == "memory"


def test_fixed_excludes_clients_largest_fit_keeps() -> None:
    fixed = allocate("fixed", PROFILES, MENU, _table_cost, fixed_index=-1)

    assert _sizes(fixed.options) == [None, None, None, 3]
    assert excluded_by_fixed(PROFILES, MENU, _table_cost) == 3
    assert excluded_by_fixed(PROFILES, MENU, _table_cost, fixed_index=0) == 1


def test_deadline_lowers_the_choice_and_excludes_slow_clients() -> None:
    # Round time = r seconds of compute at 1e9 FLOP/s plus ~0 transfer.
    slow = [_device(8.0, speed=1e9), _device(8.0, speed=0.4e9)]

    allocation = allocate("largest-fit", slow, MENU, _table_cost, deadline_s=2.1)

    assert _sizes(allocation.options) == [2, None]
    assert allocation.clients[1].reason == "deadline"
    assert all(t is None or t <= 2.1 for t in (c.time_s for c in allocation.clients))


def test_summary_totals() -> None:
    summary = allocate("largest-fit", PROFILES, MENU, _table_cost).summary()

    assert (summary.participating, summary.excluded) == (3, 1)
    assert (summary.excluded_memory, summary.excluded_deadline) == (1, 0)
    assert summary.upload_bytes == (100 + 200 + 300) * 4
    assert summary.download_bytes == 3 * 400
    assert summary.max_time_s == pytest.approx(3.0, rel=1e-5)


def test_to_rows_are_plain_dicts() -> None:
    rows = allocate("largest-fit", PROFILES, MENU, _table_cost).to_rows()

    assert rows[0]["option"] is None and rows[0]["excluded"] == "memory"
    assert rows[3]["option"] == "lora-3"
    assert rows[3]["memory_gib"] == 3.0
    assert set(rows[0]) == set(rows[3])


def test_budget_proportional_scales_with_device_share() -> None:
    profiles = [_device(8.0), _device(16.0), _device(32.0)]

    allocation = allocate("budget-proportional", profiles, MENU, _table_cost)

    # shares 1/4, 1/2, 1 of the menu: ceil(0.75) = 1, ceil(1.5) = 2, 3 options.
    assert _sizes(allocation.options) == [1, 2, 3]


def test_per_client_cost_depends_on_the_client() -> None:
    def cost(client: int, option: AdapterOption) -> ClientCost:
        return ClientCost(GIB, option.size * 1e9 * (client + 1), 0, 0)

    twins = [_device(8.0), _device(8.0)]
    allocation = allocate("largest-fit", twins, MENU, cost, deadline_s=3.0)

    assert _sizes(allocation.options) == [3, 1]


@settings(max_examples=40, deadline=None)
@given(
    memories=st.lists(st.floats(0.1, 5.0), min_size=1, max_size=12),
    speeds=st.lists(st.floats(1e8, 1e10), min_size=12, max_size=12),
    deadline=st.one_of(st.none(), st.floats(0.5, 20.0)),
    fixed_index=st.integers(0, 2),
)
def test_largest_fit_is_maximal_and_dominates_fixed(
    memories: list[float],
    speeds: list[float],
    deadline: float | None,
    fixed_index: int,
) -> None:
    profiles = [_device(m, s) for m, s in zip(memories, speeds, strict=False)]

    best = allocate("largest-fit", profiles, MENU, _table_cost, deadline_s=deadline)
    fixed = allocate(
        "fixed",
        profiles,
        MENU,
        _table_cost,
        deadline_s=deadline,
        fixed_index=fixed_index,
    )

    for client, profile in zip(best.clients, profiles, strict=True):
        larger = MENU if client.menu_index is None else MENU[client.menu_index + 1 :]
        for option in larger:
            cost = _table_cost(0, option)
            on_time = deadline is None or round_time(cost, profile) <= deadline
            assert cost.memory_bytes > profile.memory_bytes or not on_time
    assert best.summary().participating >= fixed.summary().participating


def test_analytic_costs_fixed_excludes_phones_largest_fit_keeps() -> None:
    bert = BackboneDims(108_770_304, 12, 768, 3072, 30522, 12)
    menu = build_menu(bert, "top-layers", [1, 2, 4, 12])
    cost_fn = analytic_cost_fn(bert, batch_size=16, seq_len=128, num_examples=200)
    profiles = draw_profiles("tiers", 20, seed=0)

    fixed = allocate("fixed", profiles, menu, cost_fn)
    best = allocate("largest-fit", profiles, menu, cost_fn)

    assert best.summary().participating > fixed.summary().participating
    kept = [
        f.option is None and b.option is not None
        for f, b in zip(fixed.clients, best.clients, strict=True)
    ]
    assert any(kept)
    assert all(
        b.cost is None or b.cost.memory_bytes <= b.profile.memory_bytes
        for b in best.clients
    )


@pytest.mark.parametrize(
    ("profiles", "menu", "deadline_s", "fixed_index", "match"),
    [
        (PROFILES, (), None, 0, "menu is empty"),
        ([], MENU, None, 0, "profiles is empty"),
        (PROFILES, MENU, 0.0, 0, "deadline_s"),
        (PROFILES, MENU, None, 3, "fixed_index=3"),
        (PROFILES, MENU, None, -4, "fixed_index=-4"),
    ],
)
def test_allocate_rejects_bad_arguments(
    profiles: list[DeviceProfile],
    menu: tuple[AdapterOption, ...],
    deadline_s: float | None,
    fixed_index: int,
    match: str,
) -> None:
    with pytest.raises(ValueError, match=match):
        allocate(
            "fixed",
            profiles,
            menu,
            _table_cost,
            deadline_s=deadline_s,
            fixed_index=fixed_index,
        )


def test_unknown_policy_lists_choices() -> None:
    with pytest.raises(KeyError, match="largest-fit"):
        allocate("largest", PROFILES, MENU, _table_cost)
    assert set(ALLOCATION_POLICIES) == {"budget-proportional", "fixed", "largest-fit"}
