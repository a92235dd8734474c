"""Tests for the DP sections of the run config (privacy.client_dp, record_dp).

:class:`fedpeft.config.ClientDPSection` and :class:`fedpeft.config.RecordDPSection`
hold the DP settings of a run; they are built here through
:func:`fedpeft.config.load_config`, as a run builds them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomli_w
from pydantic import ValidationError

from fedpeft.config import (
    ClientDPSection,
    ConfigError,
    RecordDPSection,
    RunConfig,
    load_config,
)

CLIENT = "privacy.client_dp"
RECORD = "privacy.record_dp"


def _load(key: str, body: str) -> RunConfig:
    return load_config(None, [f"{key}={{{body}}}"])


def _section(cfg: RunConfig, key: str) -> ClientDPSection | RecordDPSection | None:
    return cfg.privacy.client_dp if key == CLIENT else cfg.privacy.record_dp


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (CLIENT, "clip_norm=0.5, delta=1e-5, noise_multiplier=1.2, mode='distributed'"),
        (CLIENT, "clip_norm=0.5, delta=1e-5, target_epsilon=8.0, accountant='pld'"),
        (RECORD, "clip_norm=1.0, delta=1e-6, target_epsilon=8.0, accountant='pld'"),
        (RECORD, "clip_norm=2.0, delta=1e-6, noise_multiplier=0.7"),
    ],
)
def test_section_round_trips_through_toml(key: str, body: str, tmp_path: Path) -> None:
    cfg = _load(key, body)
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(cfg.to_dict()), encoding="utf-8")
    again = load_config(path)
    assert _section(again, key) is not None
    assert _section(again, key) == _section(cfg, key)
    assert again == cfg


def test_section_is_frozen() -> None:
    section = _section(_load(CLIENT, "noise_multiplier=1.0"), CLIENT)
    assert section is not None
    with pytest.raises(ValidationError, match="frozen"):
        section.clip_norm = 2.0


@pytest.mark.parametrize("key", [CLIENT, RECORD])
@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("clip_norm=0.0, noise_multiplier=1.0", "{k}.clip_norm = 0.0: "),
        ("clip_norm=inf, noise_multiplier=1.0", "{k}.clip_norm = inf: .*finite"),
        ("clip_norm=true, noise_multiplier=1.0", "{k}.clip_norm = True: .*number"),
        ("delta=0.0, noise_multiplier=1.0", "{k}.delta = 0.0: "),
        ("delta=1.0, noise_multiplier=1.0", "{k}.delta = 1.0: "),
        ("noise_multiplier=-1.0", "{k}.noise_multiplier = -1.0: "),
        ("noise_multiplier=inf", "{k}.noise_multiplier = inf: .*finite"),
        ("noise_multiplier=true", "{k}.noise_multiplier = True: .*number"),
        ("target_epsilon=-2.0", "{k}.target_epsilon = -2.0: "),
        ("target_epsilon=nan", "{k}.target_epsilon = nan: .*finite"),
        (
            "clip_norm=1.0",
            "{k} = .*set exactly one of noise_multiplier .* and target_epsilon "
            ".*neither is set",
        ),
        (
            "noise_multiplier=1.0, target_epsilon=3.0",
            "{k} = .*set exactly one of noise_multiplier .got 1.0. and "
            "target_epsilon .got 3.0., not both",
        ),
        ("noise_multiplier=1.0, accountant='gdp'", "{k}.accountant = 'gdp': "),
        ("clip=1.0, noise_multiplier=1.0", "unknown key '{k}.clip'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key: str, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match.replace("{k}", re.escape(key))):
        _load(key, body)


def test_client_mode_is_checked_and_record_dp_has_none() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.client_dp\.mode = 'local'"):
        _load(CLIENT, "noise_multiplier=1.0, mode='local'")
    with pytest.raises(ConfigError, match=r"unknown key 'privacy\.record_dp\.mode'"):
        _load(RECORD, "noise_multiplier=1.0, mode='central'")


@pytest.mark.parametrize("key", [CLIENT, RECORD])
def test_sigma_or_target_alone_is_accepted(key: str) -> None:
    given = _section(_load(key, "noise_multiplier=1.3"), key)
    assert given is not None
    assert (given.noise_multiplier, given.target_epsilon) == (1.3, None)
    target = _section(_load(key, "target_epsilon=3"), key)  # an integer ε is fine
    assert target is not None
    assert (target.noise_multiplier, target.target_epsilon) == (None, 3.0)
