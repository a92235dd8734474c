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
from fedpeft.reporting.compare import comparison_table
from fedpeft.reporting.plots import per_client_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROUNDS = 6
FULL_BYTES = 90_900_000
UP, DOWN = 31_000.0, 34_300.0
FLOPS = 2e11  # client FLOPs per round
CENTRAL = 0.745  # centralized accuracy; the convergence target is 0.735


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
            "client_flops_total": FLOPS,
            "round_seconds": 1.5,
        }
        if r % 2 == 0 or r == ROUNDS:  # evaluated rounds only
            record.update(test_accuracy=0.62 + offset + 0.03 * r, test_macro_f1=0.6)
        records.append(record)
    records += [
        {
            "run": "centralized",
            "round": r,
            "test_accuracy": 0.595 + 0.025 * r,
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
            "convergence": _convergence(offset),
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
                "test_accuracy": CENTRAL,
                "test_macro_f1": 0.74,
                "best_accuracy": CENTRAL,
            },
            "linear-probe": {"test_accuracy": 0.71, "test_macro_f1": 0.70},
        },
    }


def _convergence(offset: float) -> dict[str, Any]:
    """The convergence block of write_run's records (evaluated on even rounds at
    0.62 + offset + 0.03 r, two clients and UP + DOWN each per round)."""
    target = CENTRAL - 0.01
    reached = next(
        (r for r in range(2, ROUNDS + 1, 2) if 0.62 + offset + 0.03 * r >= target),
        None,
    )
    cost = (
        {"bytes": None, "bytes_per_client": None, "client_flops": None}
        if reached is None
        else {
            "bytes": int(reached * 2 * (UP + DOWN)),
            "bytes_per_client": reached * (UP + DOWN),
            "client_flops": reached * FLOPS,
        }
    )
    return {
        "target_rule": "centralized accuracy - 0.01",
        "target": target,
        "rounds": reached,
        **cost,
        "warm_start_accuracy": 0.62 + offset,
        "warm_start_met_target": 0.62 + offset >= target,
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


def rewrite_summary(run_dir: Path, **federated: Any) -> None:
    """Replace keys of a run's summary.json ``federated`` section (None: drop)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    for key, value in federated.items():
        summary["federated"].pop(key, None)
        if value is not None:
            summary["federated"][key] = value
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_run_summary_shows_the_cost_to_target_and_the_warm_start_apart(
    tmp_path: Path,
) -> None:
    result = load_run(write_run(tmp_path))
    console = Console(record=True, width=160)

    render_run_summary(result.summary, console)

    lines = console.export_text().splitlines()
    cost = next(line for line in lines if "to centralized − 1 pt" in line)
    warm = next(line for line in lines if "warm start (round 0)" in line)
    # rounds 1..4: 4 × 2 clients × (31 kB + 34.3 kB); per client 4 × 65.3 kB
    assert "(73.5%)" in cost and "round 4 of 6" in cost
    assert "522 kB up + down (261 kB per client)" in cost
    assert "800 GFLOP on clients" in cost
    assert warm.rstrip().endswith("62.0%, below the target")


def test_run_summary_warm_start_at_target_is_not_a_federated_round(
    tmp_path: Path,
) -> None:
    run_dir = write_run(tmp_path, offset=0.12)  # round 0 at 0.74 >= 0.735
    result = load_run(run_dir)
    console = Console(record=True, width=160)

    render_run_summary(result.summary, console)

    text = console.export_text()
    assert "74.0%, already at the target" in text
    assert "round 2 of 6" in text  # round 2 (0.80) is the first from round 1 on
    assert "round 0" not in text.replace("warm start (round 0)", "")


def test_run_summary_without_a_centralized_baseline_or_unreached(
    tmp_path: Path,
) -> None:
    run_dir = write_run(tmp_path)
    never = {**_convergence(0.0), "target": 0.95, "rounds": None}
    never.update(bytes=None, bytes_per_client=None, client_flops=None)
    rewrite_summary(run_dir, convergence=never)
    console = Console(record=True, width=160)

    render_run_summary(load_run(run_dir).summary, console)
    rewrite_summary(run_dir, convergence={**never, "target": None})
    render_run_summary(load_run(run_dir).summary, console)

    text = console.export_text()
    assert "not reached in 6 rounds" in text
    assert "— (no centralized baseline)" in text


def rounds_column(rows: list[dict[str, Any]]) -> list[str]:
    """The cells of the comparison table's rounds-to-target column."""
    table = comparison_table(rows)
    column = next(c for c in table.columns if "central−1pt" in str(c.header))
    return [str(cell) for cell in column.cells]


def test_comparison_reads_the_convergence_block(tmp_path: Path) -> None:
    runs = [load_run(write_run(tmp_path, "a"))]
    console = Console(record=True, width=160)

    rows = comparison_rows(runs)
    render_comparison(runs, console)

    assert rows[0]["rounds_to_target"] == 4 and rows[0]["target"] == CENTRAL - 0.01
    assert rows[1]["rounds_to_target"] is None  # baselines have no rounds
    assert rounds_column(rows) == ["4", "—", "—"]
    text = console.export_text()
    assert "central−1pt" in text and "(95%)" not in text


@pytest.mark.parametrize(
    ("old", "cell"), [({"rounds_to_95pct_centralized": 0}, "0 (95%)"), ({}, "—")]
)
def test_comparison_renders_summaries_written_before_convergence(
    tmp_path: Path, old: dict[str, Any], cell: str
) -> None:
    run_dir = write_run(tmp_path, "old")
    rewrite_summary(run_dir, convergence=None, **old)
    result = load_run(run_dir)
    console = Console(record=True, width=160)

    render_comparison([result], console)
    render_run_summary(result.summary, console)

    assert rounds_column(comparison_rows([result]))[0] == cell
    text = console.export_text()
    assert ("old summary's first round, round 0 counted" in text) == bool(old)
    assert ("rounds to 95% of centralized (old summary)" in text) == bool(old)


@pytest.mark.parametrize(
    ("old_summary", "marker"),
    [(False, "federated reaches it at round 4"), (True, None)],
)
def test_accuracy_plot_marks_the_target_and_the_round_reached(
    tmp_path: Path, old_summary: bool, marker: str | None
) -> None:
    from fedpeft.reporting.plots import _centralized_target, _figure

    run_dir = write_run(tmp_path)
    if old_summary:  # no convergence block: the line still at centralized − 1 pt
        rewrite_summary(run_dir, convergence=None, rounds_to_95pct_centralized=0)
    ax = _figure((4.0, 3.0)).add_subplot()

    _centralized_target(ax, load_run(run_dir))

    lines = {str(line.get_label()): line for line in ax.get_lines()}
    target = lines.pop("centralized − 1 pt (73.5%)")
    assert list(target.get_ydata()) == [CENTRAL - 0.01] * 2
    assert list(lines) == ([marker] if marker else [])
    if marker:
        assert list(lines[marker].get_xdata()) == [4, 4]


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
