"""Config loading: defaults, TOML + overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpeft.config import ConfigError, load_config, parse_override
from fedpeft.experiment import check_names


def test_defaults_are_the_main_job() -> None:
    cfg = load_config()
    assert cfg.model.backbone == "minilm-l6"
    assert cfg.data.corpus == "rotten-tomatoes"
    assert cfg.peft.method == "prompt"


def test_toml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('name = "x"\n[strategy]\nname = "dynamic"\ngamma = 2.0\n')
    cfg = load_config(path, ["strategy.gamma=0.5", 'baselines.run=["zero-shot"]'])
    assert (cfg.name, cfg.strategy.name, cfg.strategy.gamma) == ("x", "dynamic", 0.5)
    assert cfg.baselines.run == ("zero-shot",)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("strategy.gama=1", "unknown key 'strategy.gama'. Did you mean 'gamma'?"),
        ("federation.rounds=-1", "federation.rounds = -1"),
        ("model.precision=fp16", "model.precision = 'fp16'"),
        ("client.lr=abc", "client.lr = 'abc'"),
        ('baselines.run=["oracle"]', "unknown baseline 'oracle'"),
        ("stratgy.name=fedavg", "Did you mean 'strategy'?"),
    ],
)
def test_bad_values_name_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_unknown_registry_names_fail_before_any_work() -> None:
    for override, key in [
        ("strategy.name=fedsgd", "strategy.name"),
        ("peft.method=loraa", "peft.method"),
        ("partition.method=dirichlet2", "partition.method"),
        ("data.corpus=imdb", "data.corpus"),
        ("model.backbone=/no/such/dir", "model.backbone"),
    ]:
        with pytest.raises(ConfigError, match=key):
            check_names(load_config(None, [override]))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[strategy\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_override_values_are_toml_typed() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=dirichlet") == (["a"], "dirichlet")
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        cfg.seed = 3  # type: ignore[misc]
