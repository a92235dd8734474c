"""Tests for fedpeft.cli; no real training (runs are faked or synthetic)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedpeft import __version__
from fedpeft.cli import app
from fedpeft.config import RunConfig
from fedpeft.data import CORPORA
from fedpeft.models import BACKBONES

WIDE = {"COLUMNS": "200"}  # rich reads the width from here; no wrapped cells

SUMMARY: dict[str, Any] = {
    "name": "demo",
    "corpus": "bbc-news",
    "backbone": "minilm-l6",
    "method": "prompt",
    "strategy": "fedavg",
    "num_clients": 4,
    "rounds": 2,
    "seed": 0,
    "trainable_parameters": 9_605,
    "backbone_parameters": 22_713_216,
    "federated": {
        "final_accuracy": 0.875,
        "best_accuracy": 0.9,
        "final_macro_f1": 0.86,
        "convergence": {
            "target_rule": "centralized accuracy - 0.01",
            "target": 0.89,
            "rounds": None,
            "bytes": None,
            "bytes_per_client": None,
            "client_flops": None,
            "warm_start_accuracy": 0.5,
            "warm_start_met_target": False,
        },
        "bytes_up_total": 120_000,
        "bytes_down_total": 130_000,
        "bytes_up_per_client_round": 20_000.0,
        "bytes_down_per_client_round": 21_000.0,
        "full_model_bytes": 90_900_000,
        "payload_fraction_of_full": 21_000 / 90_900_000,
        "client_flops_total": 1e11,
        "train_examples": 400,
        "wall_seconds": 12.5,
        "train_examples_per_second": 32.0,
    },
    "baselines": {
        "centralized": {"test_accuracy": 0.9, "test_macro_f1": 0.89},
        "zero-shot": {"test_accuracy": 0.3125, "test_macro_f1": 0.2},
    },
}
ROUNDS = [
    {
        "run": "federated",
        "round": 0,
        "clients": [0, 1, 2, 3],
        "bytes_up": 4_000,
        "bytes_down": 84_000,
        "test_accuracy": 0.5,
        "test_macro_f1": 0.45,
    },
    {
        "run": "federated",
        "round": 1,
        "clients": [0, 2],
        "bytes_up": 40_000,
        "bytes_down": 42_000,
        "bytes_up_per_client": 20_000.0,
        "bytes_down_per_client": 21_000.0,
        "client_train_loss_mean": 0.9,
        "client_val_accuracy_p10": 0.4,
        "round_seconds": 1.25,
    },
    {
        "run": "federated",
        "round": 2,
        "clients": [1, 3],
        "bytes_up": 40_000,
        "bytes_down": 42_000,
        "bytes_up_per_client": 20_000.0,
        "bytes_down_per_client": 21_000.0,
        "test_accuracy": 0.875,
        "test_macro_f1": 0.86,
        "client_train_loss_mean": 0.5,
        "client_val_accuracy_p10": 0.7,
        "round_seconds": 1.5,
    },
]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def write_run(root: Path, name: str = "demo") -> Path:
    """A finished run directory: summary.json and metrics.jsonl per the schema."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({**SUMMARY, "name": name}))
    curve = [
        {
            "run": "centralized",
            "round": r,
            "test_accuracy": 0.8 + 0.05 * r,
            "test_macro_f1": 0.8,
        }
        for r in (1, 2)
    ]
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*ROUNDS, *curve])
    )
    return run_dir


# --- listings and config --------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")

    assert result.exit_code == 0
    assert __version__ in result.output


def test_datasets_lists_every_shipped_corpus() -> None:
    result = invoke("datasets")

    assert result.exit_code == 0, result.output
    for name in ("rotten-tomatoes", "bbc-news", *CORPORA):
        assert name in result.stdout


def test_models_lists_every_backbone() -> None:
    result = invoke("models")

    assert result.exit_code == 0, result.output
    for name in ("minilm-l6", *BACKBONES):
        assert name in result.stdout


def test_config_show_prints_resolved_toml_with_override() -> None:
    result = invoke(
        "config",
        "show",
        "--set",
        "strategy.name=dynamic",
        "--set",
        "federation.rounds=3",
    )

    assert result.exit_code == 0, result.output
    tree = tomllib.loads(result.stdout)
    assert tree["strategy"]["name"] == "dynamic"
    assert tree["federation"]["rounds"] == 3
    assert RunConfig.model_validate(tree).strategy.name == "dynamic"  # round-trips


def test_config_show_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('name = "mine"\n[peft]\nprompt_length = 8\n')

    result = invoke("config", "show", str(path))

    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["peft"]["prompt_length"] == 8


def test_misspelt_key_exits_2_and_suggests_the_key() -> None:
    result = invoke("config", "show", "--set", "strategy.gama=1")

    assert result.exit_code == 2
    assert "gamma" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_strategy_exits_2_naming_the_choices() -> None:
    result = invoke("config", "show", "--set", "strategy.name=fedfoo")

    assert result.exit_code == 2
    assert "fedfoo" in result.stderr
    for choice in ("fedavg", "fedprox", "dynamic"):
        assert choice in result.stderr


def test_run_rejects_a_bad_config_before_training(tmp_path: Path) -> None:
    result = invoke(
        "run", "--set", "strategy.name=fedfoo", "--set", f"output_dir={tmp_path}"
    )

    assert result.exit_code == 2
    assert "fedavg" in result.stderr
    assert not (tmp_path / "default").exists()


def test_run_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = invoke("run", str(tmp_path / "nope.toml"))

    assert result.exit_code == 2
    assert "nope.toml" in result.stderr


# --- run (with run_experiment faked) --------------------------------------------------


def fake_run_experiment(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Emits the events of a 2-round run with two baselines, then returns SUMMARY."""

    def fake(
        cfg: RunConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        emit = on_event or (lambda kind, payload: None)
        emit("start", {"rounds": 2, "runs": ["federated", "centralized", "zero-shot"]})
        for record in ROUNDS:
            emit("round", record)
        for name, metrics in SUMMARY["baselines"].items():
            emit("phase", {"name": name, "status": "start"})
            emit("phase", {"name": name, "status": "done", "metrics": metrics})
        emit("done", SUMMARY)
        return SUMMARY

    return fake


def test_run_shows_rounds_and_the_final_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "fedpeft.engine.runner.run_experiment", fake_run_experiment(tmp_path)
    )

    result = invoke("run", "--set", f"output_dir={tmp_path}", "--set", "name=demo")

    assert result.exit_code == 0, result.output
    assert "federated round 2/2" in result.stderr  # one line per round off a terminal
    assert "zero-shot done: test acc 31.2%" in result.stderr
    out = result.stdout
    assert "87.5%" in out and "90.0%" in out and "31.2%" in out  # fed, best, zero-shot
    assert "20 kB up, 21 kB down" in out
    assert "1/4,329 of the full model" in out
    lines = out.splitlines()
    cost = next(line for line in lines if "to centralized − 1 pt (89.0%)" in line)
    assert "not reached in 2 rounds" in cost  # 87.5% after round 2 < 89%
    warm = next(line for line in lines if "warm start (round 0)" in line)
    assert "50.0%, below the target" in warm
    assert str(tmp_path / "demo") in out


def test_run_failure_exits_1_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("fedpeft.engine.runner.run_experiment", broken)

    result = invoke("run", "--quiet")

    assert result.exit_code == 1
    assert "CUDA out of memory" in result.stderr


def test_interrupted_run_exits_130_and_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr("fedpeft.engine.runner.run_experiment", interrupted)

    result = invoke("run", "--set", "federation.rounds=3")

    assert result.exit_code == 130
    assert "fedpeft run --set federation.rounds=3 --resume" in result.stderr


# --- report ---------------------------------------------------------------------------


def test_report_on_a_missing_directory_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    result = invoke("report", str(tmp_path / "absent"))

    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_report_on_a_directory_without_summary_says_so(tmp_path: Path) -> None:
    result = invoke("report", str(tmp_path))

    assert result.exit_code == 2
    assert "summary.json" in result.stderr


def test_report_prints_the_table_and_writes_the_plot(tmp_path: Path) -> None:
    first, second = write_run(tmp_path, "alpha"), write_run(tmp_path, "beta")

    result = invoke("report", str(first), str(second))

    assert result.exit_code == 0, result.output
    for text in (
        "alpha",
        "beta",
        "prompt + fedavg",
        "centralized",
        "zero-shot",
        "87.5%",
        "20 kB",
    ):
        assert text in result.stdout
    png = first / "plots" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in result.stdout


def test_report_writes_to_out(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path)
    out = tmp_path / "figures" / "cmp.png"

    result = invoke("report", str(run_dir), "--out", str(out))

    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000


@pytest.mark.slow
def test_partition_shows_the_client_table_and_writes_the_plot(tmp_path: Path) -> None:
    out = tmp_path / "mix.png"

    result = invoke(
        "partition",
        "--set",
        "data.corpus=bbc-news",
        "--set",
        "federation.num_clients=4",
        "--set",
        "data.max_train=200",
        "--plot",
        str(out),
    )

    assert result.exit_code == 0, result.output
    assert "business" in result.stdout and "mean label skew" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_privacy_epsilon_matches_the_accountant() -> None:
    from fedpeft.privacy import epsilon_after

    result = invoke(
        "privacy", "epsilon", "-z", "1.1", "-T", "50", "-q", "0.1", "--delta", "1e-5"
    )

    assert result.exit_code == 0, result.output
    expected = epsilon_after(50, 1.1, 1e-5, "poisson", sample_rate=0.1)
    assert f"ε = {expected:.4f}" in result.stdout


def test_privacy_calibrate_never_overshoots() -> None:
    result = invoke(
        "privacy",
        "calibrate",
        "--target-epsilon",
        "4",
        "--rounds",
        "50",
        "--sample-rate",
        "0.1",
        "--delta",
        "1e-5",
    )

    assert result.exit_code == 0, result.output
    eps = float(result.stdout.split("gives ε = ")[1].split()[0])
    assert eps <= 4.0


def test_privacy_fixed_sampling_needs_its_sizes() -> None:
    result = invoke("privacy", "epsilon", "-z", "1", "-T", "5", "--sampling", "fixed")
    assert result.exit_code == 2
    assert "--clients-per-round" in result.output


def test_importing_the_cli_does_not_import_transformers() -> None:
    """transformers takes seconds to import; `fedpeft --help` and importing the
    package's modules must not pay it (it is imported when a model loads)."""
    import subprocess
    import sys

    code = (
        "import sys, fedpeft.cli, fedpeft.models.loading, fedpeft.engine.runner; "
        "print('transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
