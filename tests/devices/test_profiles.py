"""Tests for fedpeft.devices.profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.devices import (
    DEVICE_DISTRIBUTIONS,
    GIB,
    MB,
    TIERS,
    DeviceProfile,
    draw_profiles,
    load_profiles,
)
from fedpeft.devices.profiles import HEAVY_TAIL_CLIPS

DISTRIBUTIONS = sorted(DEVICE_DISTRIBUTIONS)
RANDOM = ["phones-and-servers", "tiers"]


@pytest.mark.parametrize("spec", DISTRIBUTIONS)
def test_same_seed_same_profiles(spec: str) -> None:
    assert draw_profiles(spec, 30, seed=7) == draw_profiles(spec, 30, seed=7)


@pytest.mark.parametrize("spec", RANDOM)
def test_different_seeds_differ(spec: str) -> None:
    assert draw_profiles(spec, 30, seed=1) != draw_profiles(spec, 30, seed=2)


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(DISTRIBUTIONS),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_valid_profile_per_client(spec: str, n: int, seed: int) -> None:
    profiles = draw_profiles(spec, n, seed)

    assert len(profiles) == n
    assert len({p.name for p in profiles}) == n
    assert all(isinstance(p.memory_bytes, int) for p in profiles)


def test_uniform_is_one_mid_range_device() -> None:
    profiles = draw_profiles("uniform", 5, seed=0)

    assert len({_strip(p) for p in profiles}) == 1
    assert profiles[0].memory_bytes == 8 * GIB


def _strip(p: DeviceProfile) -> tuple[object, ...]:
    return (p.memory_bytes, p.speed, p.uplink_bytes_per_s, p.downlink_bytes_per_s)


def test_tiers_exact_shares_and_ranges() -> None:
    profiles = draw_profiles("tiers", 100, seed=3)
    by_name = {t.name: t for t in TIERS}

    counts = {t.name: sum(p.tier == t.name for p in profiles) for t in TIERS}
    assert counts == {"phone": 30, "laptop": 50, "server": 20}
    for p in profiles:
        t = by_name[p.tier]
        assert t.memory_gib[0] <= p.memory_bytes / GIB <= t.memory_gib[1] + 1e-9
        assert t.speed[0] <= p.speed <= t.speed[1]
        assert t.uplink_mb[0] <= p.uplink_bytes_per_s / MB <= t.uplink_mb[1]
        assert t.downlink_mb[0] <= p.downlink_bytes_per_s / MB <= t.downlink_mb[1]


def test_tiers_shares_stay_exact_for_small_populations() -> None:
    tiers = [p.tier for p in draw_profiles("tiers", 10, seed=0)]

    assert tiers.count("phone") == 3
    assert tiers.count("server") == 2


def test_heavy_tail_is_clipped_and_mostly_phones() -> None:
    profiles = draw_profiles("phones-and-servers", 500, seed=0)
    clips = HEAVY_TAIL_CLIPS

    for p in profiles:
        lo, hi = clips["memory_gib"]
        assert lo * GIB - 1 <= p.memory_bytes <= hi * GIB + 1
        assert clips["speed"][0] <= p.speed <= clips["speed"][1]
        lo, hi = clips["uplink_mb"]
        assert lo * MB <= p.uplink_bytes_per_s <= hi * MB
    tiers = [p.tier for p in profiles]
    assert tiers.count("phone") > tiers.count("laptop") > tiers.count("server") > 0


def test_profile_rejects_non_positive_values() -> None:
    with pytest.raises(ValueError, match="speed"):
        DeviceProfile("x", "phone", GIB, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="memory_bytes must be an int"):
        DeviceProfile("x", "phone", 1.5, 1.0, 1.0, 1.0)  # type: ignore[arg-type]


def test_unknown_distribution_lists_choices() -> None:
    with pytest.raises(KeyError, match="tiers"):
        draw_profiles("tier", 3, seed=0)


@pytest.mark.parametrize(("n", "seed"), [(0, 0), (3, -1)])
def test_draw_rejects_bad_arguments(n: int, seed: int) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        draw_profiles("uniform", n, seed)


# --- files ------------------------------------------------------------------------

CSV = """name,tier,memory_gib,speed_flops,uplink_mbps,downlink_mbps
a,phone,2,1e10,8,80
b,server,40,1e12,800,800
c,laptop,8,2e11,80,400
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_converts_units(tmp_path: Path) -> None:
    profiles = load_profiles(_write(tmp_path, "d.csv", CSV))

    assert [p.name for p in profiles] == ["a", "b", "c"]
    assert profiles[0] == DeviceProfile("a", "phone", 2 * GIB, 1e10, 1e6, 1e7)


def test_load_json_and_toml_match(tmp_path: Path) -> None:
    row = {"memory_bytes": 1000, "speed_flops": 5e9}
    row |= {"uplink_bytes_per_s": 10.0, "downlink_bytes_per_s": 20.0}
    json_list = _write(tmp_path, "a.json", json.dumps([row]))
    json_obj = _write(tmp_path, "b.json", json.dumps({"devices": [row]}))
    toml = "[[devices]]\n" + "\n".join(f"{k} = {v}" for k, v in row.items())
    toml_path = _write(tmp_path, "c.toml", toml)

    loaded = [load_profiles(p) for p in (json_list, json_obj, toml_path)]

    expected = DeviceProfile("client-0", "file", 1000, 5e9, 10.0, 20.0)
    assert loaded == [[expected]] * 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("memory_gib,uplink_mbps,downlink_mbps\n1,1,1\n", "missing speed_flops"),
        ("memory_gib,speed_flops,uplink_mbps,downlink_mbps\nabc,1,1,1\n", "'abc'"),
        ("memory_gib,speed_flops,uplink_mbps,downlink_mbps\n-1,1,1,1\n", "> 0"),
        ("memory_gb,speed_flops,uplink_mbps,downlink_mbps\n1,1,1,1\n", "memory_gb"),
        (
            "memory_gib,memory_bytes,speed_flops,uplink_mbps,downlink_mbps\n"
            "1,1,1,1,1\n",
            "only one key",
        ),
        ("memory_gib,speed_flops,uplink_mbps,downlink_mbps\n", "no device rows"),
    ],
)
def test_load_csv_errors_name_the_problem(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        load_profiles(_write(tmp_path, "d.csv", text))


def test_load_rejects_unknown_suffix_and_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.yaml"):
        load_profiles(_write(tmp_path, "d.yaml", ""))
    with pytest.raises(ValueError, match="list of device objects"):
        load_profiles(_write(tmp_path, "d.json", '{"rows": []}'))


def test_draw_from_file_takes_first_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", CSV)

    profiles = draw_profiles(f"file:{path}", 2, seed=0)

    assert [p.name for p in profiles] == ["a", "b"]


def test_draw_from_short_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", CSV)

    with pytest.raises(ValueError, match="3 device rows but num_clients=4"):
        draw_profiles(f"file:{path}", 4, seed=0)
