"""The whole experiment through the CLI on a tiny real configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpeft.cli import app
from fedpeft.models.precision import cpu_native_bf16
from fedpeft.rundir.sink import read_metrics
from tests.conftest import TINY

LORA_TINY = tuple(t for t in TINY if not t.startswith("peft.prompt_"))

pytestmark = pytest.mark.slow


def test_cli_run_writes_a_complete_run_directory(tmp_path: Path) -> None:
    args = ["run", "--quiet"]
    for item in [
        *TINY,
        f"output_dir={tmp_path}",
        "name=e2e",
        'baselines.run=["centralized","linear-probe","zero-shot"]',
    ]:
        args += ["--set", item]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "e2e"
    for name in (
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "baselines.json",
        "partition.json",
        "adapter/adapter.safetensors",
        "plots/accuracy.png",
        "plots/bytes.png",
        "plots/partition.png",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["baselines"]) == {"centralized", "linear-probe", "zero-shot"}
    fed = summary["federated"]
    assert fed["bytes_up_per_client_round"] == fed["bytes_down_per_client_round"]
    assert fed["payload_fraction_of_full"] < 1e-3
    env = summary["environment"]
    assert env["torch"].startswith("2.13.0") and env["transformers"][0].isdigit()
    # TINY trains in fp32; evaluation is "auto": bf16 only on bf16 hardware
    native = env["cpu_bf16"] == "native"
    assert env["cpu_bf16"] == ("native" if cpu_native_bf16() else "emulated")
    assert env["precision"] == f"train fp32, eval {'bf16' if native else 'fp32'}"
    assert env["cpu"]  # the model name: speeds differ several-fold between CPUs
    runs = {r["run"] for r in read_metrics(run_dir / "metrics.jsonl")}
    assert runs == {"federated", "centralized"}
    assert "centralized" in result.stdout

    again = CliRunner().invoke(app, [*args, "--resume"])  # finished: nothing to redo
    assert again.exit_code == 0, again.output
    resumed = json.loads((run_dir / "summary.json").read_text())["federated"]
    for key in ("final_accuracy", "best_accuracy", "bytes_up_total", "train_examples"):
        assert resumed[key] == fed[key], key


def test_cli_run_with_secagg_and_client_dp_reports_epsilon(tmp_path: Path) -> None:
    args = ["run", "--quiet"]
    for item in [
        *TINY,
        f"output_dir={tmp_path}",
        "name=private",
        "strategy.name=fedprompt",
        "peft.head_init=zeros",
        "privacy.secagg=true",
        "privacy.client_dp={noise_multiplier=1.0, clip_norm=0.5, mode='distributed'}",
    ]:
        args += ["--set", item]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    records = read_metrics(tmp_path / "private" / "metrics.jsonl")
    epsilons = [r["epsilon"] for r in records if r["round"] > 0]
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1]
    assert all(r.get("secagg_passes") == 1 for r in records if r["round"] > 0)
    summary = json.loads((tmp_path / "private" / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == epsilons[-1]
    assert "client-level DP" in result.stdout and "secure aggregation" in result.stdout


def test_cli_run_with_device_profiles_allocates_lora_sizes(tmp_path: Path) -> None:
    args = ["run", "--quiet"]
    for item in [
        *LORA_TINY,
        f"output_dir={tmp_path}",
        "name=devices",
        "federation.rounds=1",
        "peft.method=lora",
        "devices.profiles=tiers",
        "devices.deadline_s=0.5",
        'devices.menu=["2@1", "8@0"]',
        "devices.rule=flexlora",
    ]:
        args += ["--set", item]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "devices"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["environment"]["torch"].startswith("2.13.0")
    devices = summary["devices"]
    assert devices["participating"] + devices["excluded"] == 4
    assert sum(devices["sizes"].values()) == devices["participating"]
    allocation = json.loads((run_dir / "allocation.json").read_text())
    assert len(allocation["clients"]) == 4 and allocation["menu"] == [
        "r2@top1",
        "r8@all",
    ]
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1]
    export = CliRunner().invoke(app, ["export", str(run_dir), str(tmp_path / "out")])
    assert export.exit_code == 2 and "device run" in export.output


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["devices.profiles=tiers"], "set peft.method=lora"),
        (
            ["devices.profiles=tiers", "peft.method=lora", "devices.policy=best"],
            "devices.policy",
        ),
        (
            [
                "devices.profiles=tiers",
                "peft.method=lora",
                "privacy.client_dp={noise_multiplier=1.0}",
            ],
            "sensitivity C/m̄ does not hold",
        ),
        (
            [
                "devices.profiles=tiers",
                "peft.method=lora",
                "privacy.secagg=true",
                "devices.rule=flexlora",
            ],
            "devices.rule = 'flexlora'",
        ),
    ],
)
def test_device_runs_refuse_what_they_cannot_do(
    tmp_path: Path, items: list[str], message: str
) -> None:
    args = ["run", "--quiet", "--set", f"output_dir={tmp_path}"]
    for item in [*LORA_TINY, *items]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
