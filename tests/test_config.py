"""Config loading: defaults, TOML + overrides, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from fedpeft.config import (
    ConfigError,
    RunConfig,
    build_config,
    load_config,
    parse_override,
)
from fedpeft.experiment import check_names
from fedpeft.peft import PEFT_METHODS, PeftConfig, peft_config
from fedpeft.peft.lora.config import LoraConfig
from fedpeft.registry import ConfigRegistry
from fedpeft.strategies import STRATEGIES, DynamicOptions, strategy_config


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
        ("client.lrr=1", "unknown key 'client.lrr'. Did you mean 'lr'?"),
        ("strategy.fraction_fitt=1", "Did you mean 'fraction_fit'?"),
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


@pytest.mark.parametrize("method", sorted(PEFT_METHODS))
def test_every_peft_method_round_trips_through_toml(method: str) -> None:
    options = PEFT_METHODS.options(method)()
    tree = RunConfig(peft=options).to_dict()

    again = build_config(tomllib.loads(tomli_w.dumps(tree)))

    assert type(again.peft) is type(options)
    assert again.peft == options
    assert again.to_dict() == tree


def test_non_default_options_survive_the_round_trip() -> None:
    cfg = load_config(
        None,
        [
            "peft.method=lora",
            "peft.rank=4",
            'peft.target_modules=["query"]',
            "partition.method=quantity",
            "partition.quantity_distribution=log-normal",
        ],
    )

    again = build_config(cfg.to_dict())

    assert again == cfg
    assert again.to_dict()["peft"]["rank"] == 4
    assert again.to_dict()["partition"]["quantity_distribution"] == "log-normal"


def test_a_method_keeps_todays_keys_and_defaults() -> None:
    lora = load_config(None, ["peft.method=lora", "peft.rank=16"]).peft

    assert lora.model_dump() == {
        "method": "lora",
        "head_init": "class-means",
        "rank": 16,
        "alpha": 16.0,
        "rank_scaling": "standard",
        "target_modules": (),
        "layers": 0,
    }
    assert load_config().peft.model_dump() == {
        "method": "prompt",
        "head_init": "class-means",
        "prompt_length": 20,
        "prompt_init": "vocab",
    }


def test_a_key_of_another_method_names_the_method_and_its_options() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["peft.rank=8"])

    assert (
        "peft.rank is not an option of peft.method='prompt'; its options: "
        "prompt_length, prompt_init, head_init; rank is an option of "
        "peft.method='lora'"
    ) in str(err.value)


def test_a_key_no_method_has_gets_a_spelling_hint() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'prompt_length'"):
        load_config(None, ["peft.prompt_lenght=8"])


def test_an_unknown_method_fails_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["peft.method=lorra"])

    assert (
        "peft.method = 'lorra': unknown PEFT method 'lorra'. Did you mean 'lora'?"
    ) in str(err.value)


def test_peft_config_validates_through_the_registry() -> None:
    full = peft_config("full", head_init="zeros")

    assert (full.method, full.head_init) == ("full", "zeros")
    assert peft_config().method == "prompt"
    with pytest.raises(ConfigError, match=r"peft.rank = 0"):
        peft_config("lora", rank=0)


def test_replace_is_a_validated_copy() -> None:
    lora = peft_config("lora", rank=8)
    assert isinstance(lora, LoraConfig)

    smaller = lora.replace(rank=4, layers=2)

    assert (smaller.rank, smaller.layers, lora.rank) == (4, 2, 8)
    with pytest.raises(ConfigError, match="rank = 0"):
        lora.replace(rank=0)
    with pytest.raises(ConfigError, match="prompt_length"):
        lora.replace(prompt_length=3)


def test_a_registry_refuses_options_tagged_with_another_name() -> None:
    registry: ConfigRegistry[PeftConfig, object] = ConfigRegistry(
        "PEFT method", section="peft", default="prompt"
    )

    with pytest.raises(ValueError, match="must default to 'other'"):
        registry.add_component("other", PEFT_METHODS.options("lora"), object())
    registry.add_component("lora", PEFT_METHODS.options("lora"), object())
    registry.remove("lora")
    assert "lora" not in registry


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_round_trips_through_toml(name: str) -> None:
    options = STRATEGIES.options(name)()
    tree = RunConfig(strategy=options).to_dict()

    again = build_config(tomllib.loads(tomli_w.dumps(tree)))

    assert type(again.strategy) is type(options)
    assert again.strategy == options
    assert again.to_dict() == tree


def test_a_strategy_keeps_todays_keys_and_defaults() -> None:
    dynamic = load_config(None, ["strategy.name=dynamic", "strategy.gamma=2"])

    assert dynamic.strategy.model_dump() == {
        "name": "dynamic",
        "fraction_fit": 0.5,
        "min_fit_clients": 2,
        "server_momentum": 0.0,
        "scaffold": False,
        "gamma": 2.0,
        "distance_scale": "median",
        "quality_beta": 0.0,
    }
    assert strategy_config("fedadam").model_dump() == {
        "name": "fedadam",
        "fraction_fit": 0.5,
        "min_fit_clients": 2,
        "server_momentum": 0.0,
        "scaffold": False,
        "server_lr": 1e-2,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }
    assert strategy_config("fedprox").model_dump()["proximal_mu"] == 0.01


def test_default_strategy_section_is_unchanged_in_config_show() -> None:
    from typer.testing import CliRunner

    from fedpeft.cli import app

    result = CliRunner().invoke(app, ["config", "show"])

    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["strategy"] == {
        "name": "fedavg",
        "fraction_fit": 0.5,
        "min_fit_clients": 2,
        "server_momentum": 0.0,
        "scaffold": False,
    }


def test_a_key_of_another_strategy_names_the_strategy_and_its_options() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["strategy.gamma=2"])

    assert (
        "strategy.gamma is not an option of strategy.name='fedavg'; its options: "
        "fraction_fit, min_fit_clients, server_momentum, scaffold; gamma is an "
        "option of strategy.name='dynamic'"
    ) in str(err.value)


def test_an_unknown_strategy_fails_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["strategy.name=fedavgg"])

    assert (
        "strategy.name = 'fedavgg': unknown strategy 'fedavgg'. Did you mean 'fedavg'?"
    ) in str(err.value)


def test_a_strategy_option_out_of_range_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"strategy.quality_beta = -1"):
        load_config(None, ["strategy.name=dynamic", "strategy.quality_beta=-1"])
    with pytest.raises(ConfigError, match=r"strategy.gamma = inf"):
        load_config(None, ["strategy.name=dynamic", "strategy.gamma=inf"])
    with pytest.raises(ConfigError, match=r"strategy.fraction_fit = 0"):
        load_config(None, ["strategy.fraction_fit=0"])


def test_strategy_replace_is_a_validated_copy() -> None:
    dynamic = strategy_config("dynamic", gamma=2.0)
    assert isinstance(dynamic, DynamicOptions)

    sharper = dynamic.replace(gamma=4.0)

    assert (sharper.gamma, dynamic.gamma) == (4.0, 2.0)
    with pytest.raises(ConfigError, match="proximal_mu"):
        dynamic.replace(proximal_mu=0.1)


def test_a_misspelt_key_inside_an_optional_section_gets_its_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["privacy.client_dp={clip=0.5, noise_multiplier=1.0}"])
    message = str(info.value)
    assert "'privacy.client_dp.clip'" in message
    assert "Did you mean 'clip_norm'?" in message and "target_epsilon" in message


def test_a_named_gpu_runs_each_shared_step_as_one_batch_unless_told() -> None:
    assert load_config(None, []).federation.bucket_size == 16
    assert load_config(None, ["model.device=cuda"]).federation.bucket_size == 0
    told = ["model.device=cuda:0", "federation.bucket_size=8"]
    assert load_config(None, told).federation.bucket_size == 8
    again = build_config(load_config(None, ["model.device=cuda"]).to_dict())
    assert again.federation.bucket_size == 0  # a saved config reads back the same
