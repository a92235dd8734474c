"""Tests for fedpeft.reporting (plots and tables) on synthetic run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fedpeft.reporting import (
    comparison_rows,
    fraction_of_full,
    human_bytes,
    load_run,
    plot_compare,
    plot_run,
    render_comparison,
    render_run_summary,
)
from fedpeft.reporting.plots import per_client_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROUNDS = 6
FULL_BYTES = 90_900_000
UP, DOWN = 31_000.0, 34_300.0


def write_run(root: Path, name: str = "demo", *, offset: float = 0.0) -> Path:
    """A run directory as run_experiment writes it: summary.json + metrics.jsonl."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    records: list[dict[str, Any]] = [
        {
            "run": "federated",
            "round": 0,
            "clients": [0, 1, 2, 3],
            "bytes_up": 4 * 3_100,
            "bytes_down": 4 * DOWN,
            "test_accuracy": 0.62 + offset,
            "test_macro_f1": 0.6,
        }
    ]
    for r in range(1, ROUNDS + 1):
        record: dict[str, Any] = {
            "run": "federated",
            "round": r,
            "clients": [0, 2],
            "bytes_up": 2 * UP,
            "bytes_down": 2 * DOWN,
            "bytes_up_per_client": UP,
            "bytes_down_per_client": DOWN,
            "client_train_loss_mean": 0.7 - 0.05 * r,
            "client_val_accuracy_mean": 0.7,
            "client_val_accuracy_p10": 0.5,
            "round_seconds": 1.5,
        }
        if r % 2 == 0 or r == ROUNDS:  # evaluated rounds only
            record.update(test_accuracy=0.62 + offset + 0.03 * r, test_macro_f1=0.6)
        records.append(record)
    records += [
        {
            "run": "centralized",
            "round": r,
            "test_accuracy": 0.7 + 0.02 * r,
            "test_macro_f1": 0.7,
        }
        for r in range(1, ROUNDS + 1)
    ]
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    (run_dir / "summary.json").write_text(
        json.dumps(_summary(name, offset)), encoding="utf-8"
    )
    return run_dir


def _summary(name: str, offset: float) -> dict[str, Any]:
    final = 0.62 + offset + 0.03 * ROUNDS
    return {
        "name": name,
        "corpus": "rotten-tomatoes",
        "backbone": "minilm-l6",
        "method": "prompt",
        "strategy": "fedavg",
        "num_clients": 4,
        "rounds": ROUNDS,
        "seed": 0,
        "partition": "dirichlet",
        "alpha": 0.5,
        "trainable_parameters": 8_450,
        "backbone_parameters": 22_700_000,
        "federated": {
            "final_accuracy": final,
            "best_accuracy": final,
            "final_macro_f1": 0.79,
            "rounds_to_95pct_centralized": 4,
            "bytes_up_total": 400_000,
            "bytes_down_total": 450_000,
            "bytes_up_per_client_round": UP,
            "bytes_down_per_client_round": DOWN,
            "full_model_bytes": FULL_BYTES,
            "payload_fraction_of_full": DOWN / FULL_BYTES,
            "client_flops_total": 1e12,
            "train_examples": 5_000,
            "wall_seconds": 75.0,
            "train_examples_per_second": 120.0,
        },
        "baselines": {
            "centralized": {
                "test_accuracy": 0.82,
                "test_macro_f1": 0.81,
                "best_accuracy": 0.82,
            },
            "linear-probe": {"test_accuracy": 0.71, "test_macro_f1": 0.70},
        },
    }


def _is_png(path: Path) -> bool:
    return (
        path.is_file()
        and path.stat().st_size > 1_000
        and path.read_bytes()[:8] == PNG_MAGIC
    )


def test_plot_run_writes_accuracy_and_bytes_pngs(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path)

    paths = plot_run(run_dir)

    assert paths == [
        run_dir / "plots" / "accuracy.png",
        run_dir / "plots" / "bytes.png",
    ]
    assert all(_is_png(p) for p in paths)


def test_plot_run_without_metrics_or_baselines_still_plots(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["baselines"] = {}
    (run_dir / "summary.json").write_text(json.dumps(summary))

    paths = plot_run(run_dir)

    assert all(_is_png(p) for p in paths)


def test_plot_run_refuses_a_directory_without_summary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        plot_run(tmp_path)


def test_plot_compare_writes_one_png(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "a"), write_run(tmp_path, "b", offset=-0.05)]
    out = tmp_path / "out" / "compare.png"

    assert plot_compare(runs, out) == out
    assert _is_png(out)


def test_per_client_bytes_uses_per_client_fields_or_splits_totals() -> None:
    measured = {
        "bytes_up_per_client": 10,
        "bytes_down_per_client": 5,
        "clients": [0, 1],
    }
    round_zero = {"bytes_up": 30, "bytes_down": 90, "clients": [0, 1, 2]}

    assert per_client_bytes(measured) == 15.0
    assert per_client_bytes(round_zero) == (30 + 90) / 3
    assert per_client_bytes({"bytes_up": 0, "bytes_down": 0, "clients": []}) == 0.0


def test_comparison_rows_one_per_run_and_baseline(tmp_path: Path) -> None:
    runs = [load_run(write_run(tmp_path, "a")), load_run(write_run(tmp_path, "b"))]

    rows = comparison_rows(runs)

    assert [(r["run"], r["system"]) for r in rows] == [
        ("a", "federated"),
        ("a", "centralized"),
        ("a", "linear-probe"),
        ("b", "federated"),
        ("b", "centralized"),
        ("b", "linear-probe"),
    ]
    assert rows[0]["bytes_up"] == UP
    assert rows[2]["final_accuracy"] == 0.71


def test_render_tables_show_accuracy_bytes_and_ratio(tmp_path: Path) -> None:
    result = load_run(write_run(tmp_path))
    console = Console(record=True, width=160)

    render_run_summary(result.summary, console, run_dir=result.run_dir)
    render_comparison([result], console)

    text = console.export_text()
    assert "80.0%" in text  # federated final accuracy, 0.62 + 0.18
    assert "linear-probe" in text and "71.0%" in text
    assert "31 kB up, 34.3 kB down" in text
    assert f"1/{round(FULL_BYTES / DOWN):,} of the full model" in text
    assert "round 4 of 6" in text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1_000, "1 kB"),
        (31_040, "31 kB"),
        (34_300, "34.3 kB"),
        (999_600, "1 MB"),
        (90_900_000, "90.9 MB"),
        (None, "—"),
    ],
)
def test_human_bytes(size: float | None, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (1 / 2650, "1/2,650 of the full model"),
        (0.5, "1/2 of the full model"),
        (1.0, "1× the full model"),
        (0.0, "—"),
        (None, "—"),
    ],
)
def test_fraction_of_full(fraction: float | None, text: str) -> None:
    assert fraction_of_full(fraction) == text
