"""Tests for fedpeft.privacy.config: validated, frozen DP settings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedpeft.privacy import ClientDPConfig, RecordDPConfig, epsilon_after


def test_client_config_round_trips_through_json() -> None:
    cfg = ClientDPConfig(
        clip_norm=0.5, delta=1e-5, noise_multiplier=1.2, mode="distributed"
    )
    again = ClientDPConfig.from_dict(json.loads(json.dumps(cfg.as_dict())))
    assert again == cfg


def test_record_config_round_trips_through_json() -> None:
    cfg = RecordDPConfig(
        clip_norm=1.0, delta=1e-6, target_epsilon=8.0, accountant="pld"
    )
    assert RecordDPConfig.from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg


def test_config_is_frozen() -> None:
    cfg = ClientDPConfig(clip_norm=0.5, delta=1e-5, noise_multiplier=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.clip_norm = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"clip_norm": 0.0, "delta": 1e-5, "noise_multiplier": 1.0}, "clip_norm"),
        ({"clip_norm": 1.0, "delta": 0.0, "noise_multiplier": 1.0}, "delta"),
        (
            {"clip_norm": 1.0, "delta": 1e-5, "noise_multiplier": -1.0},
            "noise_multiplier",
        ),
        ({"clip_norm": 1.0, "delta": 1e-5, "target_epsilon": -2.0}, "target_epsilon"),
        ({"clip_norm": 1.0, "delta": 1e-5}, "exactly one"),
        (
            {
                "clip_norm": 1.0,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "target_epsilon": 1.0,
            },
            "exactly one",
        ),
        (
            {"clip_norm": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "mode": "local"},
            "mode",
        ),
        (
            {
                "clip_norm": 1.0,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "accountant": "gdp",
            },
            "accountant",
        ),
    ],
)
def test_client_config_errors_name_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        ClientDPConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_key_refused() -> None:
    with pytest.raises(ValueError, match="clip"):
        ClientDPConfig.from_dict({"clip": 1.0, "delta": 1e-5, "noise_multiplier": 1.0})


def test_resolve_given_or_calibrated_sigma() -> None:
    given = ClientDPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.3)
    assert given.resolve_noise_multiplier(10, "poisson", sample_rate=0.1) == 1.3
    target = ClientDPConfig(clip_norm=1.0, delta=1e-5, target_epsilon=3.0)
    sigma = target.resolve_noise_multiplier(10, "poisson", sample_rate=0.1)
    assert epsilon_after(10, sigma, 1e-5, "poisson", sample_rate=0.1) <= 3.0
