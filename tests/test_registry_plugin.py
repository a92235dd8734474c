"""A PEFT method defined here, outside the package, registered and run through
the CLI: a new method needs its options class, its adapter and one
registration, with no edit to fedpeft itself."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from fedpeft.cli import app
from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft import PEFT_METHODS, AdapterClassifier, PeftConfig
from tests.conftest import TINY

METHOD = "test-pooled-bias"
WIDE = {"COLUMNS": "300"}


class PooledBiasConfig(PeftConfig):
    """A learned shift of the pooled features."""

    method: Literal["test-pooled-bias"] = "test-pooled-bias"
    bias_scale: float = Field(1.0, gt=0.0, description="multiplies the shift")


class PooledBiasClassifier(AdapterClassifier):
    """Frozen pooled features + ``bias_scale``·b, b trainable ``(dim,)``."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        label_names: tuple[str, ...] = (),
        bias_scale: float = 1.0,
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        self.bias_scale = bias_scale
        self.shift = nn.Parameter(torch.zeros(backbone.hidden_size))

    def features(self, batch: Batch) -> torch.Tensor:
        return super().features(batch) + self.bias_scale * self.shift


@pytest.fixture
def pooled_bias() -> Iterator[str]:
    PEFT_METHODS.add_component(METHOD, PooledBiasConfig, PooledBiasClassifier)
    try:
        yield METHOD
    finally:
        PEFT_METHODS.remove(METHOD)


def _tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """The suite's tiny run, less the prompt's own option, two clients, one round."""
    items = [i for i in TINY if not i.startswith("peft.")]
    items += [
        f"output_dir={tmp_path}",
        "name=plugin",
        "federation.num_clients=2",
        "federation.rounds=1",
        "strategy.fraction_fit=1.0",
        *extra,
    ]
    return [word for item in items for word in ("--set", item)]


def test_a_method_registered_outside_the_package_runs_through_the_cli(
    tmp_path: Path, pooled_bias: str
) -> None:
    args = _tiny_overrides(
        tmp_path, f"peft.method={pooled_bias}", "peft.bias_scale=0.5"
    )

    result = CliRunner().invoke(app, ["run", "--quiet", *args], env=WIDE)

    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "plugin"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == pooled_bias
    hidden, classes = 384, 5  # MiniLM-L6's width; bbc-news's classes
    assert summary["trainable_parameters"] == hidden + (hidden + 1) * classes
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["peft"] == {
        "method": pooled_bias,
        "head_init": "class-means",
        "bias_scale": 0.5,
    }


def test_config_show_prints_a_registered_methods_own_options(
    pooled_bias: str,
) -> None:
    args = ["--set", f"peft.method={pooled_bias}", "--set", "peft.bias_scale=2.0"]

    result = CliRunner().invoke(app, ["config", "show", "--no-check", *args])

    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["peft"] == {
        "method": pooled_bias,
        "head_init": "class-means",
        "bias_scale": 2.0,
    }


def test_a_registered_method_refuses_another_methods_option(
    pooled_bias: str,
) -> None:
    args = ["--set", f"peft.method={pooled_bias}", "--set", "peft.rank=4"]

    result = CliRunner().invoke(app, ["config", "show", *args], env=WIDE)

    assert result.exit_code == 2
    assert (
        f"peft.rank is not an option of peft.method='{pooled_bias}'; its options: "
        "bias_scale, head_init"
    ) in " ".join(result.stderr.split())


def test_an_unregistered_method_is_unknown_again() -> None:
    result = CliRunner().invoke(
        app, ["config", "show", "--set", f"peft.method={METHOD}"], env=WIDE
    )

    assert result.exit_code == 2
    assert f"unknown PEFT method {METHOD!r}" in " ".join(result.stderr.split())
