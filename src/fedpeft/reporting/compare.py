"""Several finished runs side by side: one comparison table.

:func:`comparison_rows` flattens each run's federated result and its baselines
into rows; :func:`comparison_table` renders them and :func:`render_comparison`
prints them to a :class:`rich.console.Console`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fedpeft.reporting.formatting import (
    MISSING,
    accuracy,
    duration,
    human_bytes,
    percent,
    score,
)
from fedpeft.reporting.runs import RunResult, run_labels

_COMPARISON_CELLS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "final\nacc": lambda r: accuracy(r["final_accuracy"]),
    "best\nacc": lambda r: accuracy(r["best_accuracy"]),
    "macro\nF1": lambda r: score(r["macro_f1"]),
    "up": lambda r: human_bytes(r["bytes_up"]),
    "down": lambda r: human_bytes(r["bytes_down"]),
    "% of\nfull": lambda r: percent(r["fraction_of_full"]),
    "rounds to\ncentral−1pt": lambda r: _rounds_cell(r),
    "wall\ntime": lambda r: duration(r["wall_seconds"]),
}
_NARROW_OMITS = ("best\nacc", "wall\ntime")  # dropped below _WIDE_ENOUGH columns
_WIDE_ENOUGH = 100


def comparison_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per run (its federated result) and per baseline of each run.

    Keys: ``run``, ``system`` ("federated" or the baseline name), ``method``
    ("prompt + fedavg" on federated rows, else None), ``final_accuracy``,
    ``best_accuracy``, ``macro_f1``, ``bytes_up``,
    ``bytes_down`` (per client per round), ``fraction_of_full``, ``target`` (the
    convergence target, centralized accuracy − 0.01), ``rounds_to_target`` (first
    round from 1 on at the target), ``rounds_to_95_old`` (set only from a summary
    written before the convergence block: its first round, round 0 included, at
    95% of centralized), ``wall_seconds``; a value is None where it does not apply.
    """
    rows: list[dict[str, Any]] = []
    for label, result in zip(run_labels(results), results, strict=True):
        fed, s = result.federated, result.summary
        rows.append(
            {
                "run": label,
                "system": "federated",
                "method": f"{s.get('method')} + {s.get('strategy')}",
                "final_accuracy": fed.get("final_accuracy"),
                "best_accuracy": fed.get("best_accuracy"),
                "macro_f1": fed.get("final_macro_f1"),
                "bytes_up": fed.get("bytes_up_per_client_round"),
                "bytes_down": fed.get("bytes_down_per_client_round"),
                "fraction_of_full": fed.get("payload_fraction_of_full"),
                **_convergence_fields(fed),
                "wall_seconds": fed.get("wall_seconds"),
            }
        )
        rows.extend(
            _baseline_row(label, name, m, fed) for name, m in result.baselines.items()
        )
    return rows


def _baseline_row(
    label: str, name: str, metrics: Mapping[str, Any], fed: Mapping[str, Any]
) -> dict[str, Any]:
    # FedAvg full fine-tuning ships the whole model each way, by definition.
    full = fed.get("full_model_bytes") if "bytes_up_total" in metrics else None
    return {
        "run": label,
        "system": name,
        "method": None,
        "final_accuracy": metrics.get("test_accuracy"),
        "best_accuracy": metrics.get("best_accuracy"),
        "macro_f1": metrics.get("test_macro_f1"),
        "bytes_up": full,
        "bytes_down": full,
        "fraction_of_full": 1.0 if full else None,
        "target": None,
        "rounds_to_target": None,
        "rounds_to_95_old": None,
        "wall_seconds": metrics.get("wall_seconds"),
    }


def _convergence_fields(fed: Mapping[str, Any]) -> dict[str, Any]:
    """The row's convergence keys from a summary's ``federated`` section, old
    summaries (``rounds_to_95pct_centralized`` only) included."""
    conv = fed.get("convergence")
    conv = conv if isinstance(conv, Mapping) else {}
    return {
        "target": conv.get("target"),
        "rounds_to_target": conv.get("rounds"),
        "rounds_to_95_old": None if conv else fed.get("rounds_to_95pct_centralized"),
    }


def _rounds_cell(row: Mapping[str, Any]) -> str:
    """``3``; ``not reached``; an old summary's ``2 (95%)``; ``—`` without target."""
    if isinstance(row.get("rounds_to_target"), int):
        return str(row["rounds_to_target"])
    if isinstance(row.get("rounds_to_95_old"), int):
        return f"{row['rounds_to_95_old']} (95%)"
    return "not reached" if row.get("target") is not None else MISSING


def _caption(rows: Sequence[Mapping[str, Any]]) -> str:
    caption = (
        "up, down: payload bytes per client per round; rounds to central−1pt: "
        "first round from 1 on (round 0 = warm start not counted) at centralized "
        "accuracy − 1 point"
    )
    if any(row.get("rounds_to_95_old") is not None for row in rows):
        caption += "; (95%): an old summary's first round, round 0 counted, at 95% of "
        caption += "centralized"
    return caption


def comparison_table(rows: Sequence[Mapping[str, Any]], wide: bool = True) -> Table:
    """Render :func:`comparison_rows`, federated rows in bold; ``wide=False`` omits
    the best accuracy and wall time columns (for consoles under 100 columns)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title="Comparison (each run on its own test set)",
        title_justify="left",
        caption=_caption(rows),
        caption_justify="left",
    )
    cells = {
        k: f for k, f in _COMPARISON_CELLS.items() if wide or k not in _NARROW_OMITS
    }
    table.add_column("run")  # the only column that wraps on a narrow console
    table.add_column("system", no_wrap=True)
    for column in cells:
        table.add_column(column, justify="right", no_wrap=True)
    previous = None
    for row in rows:
        if previous is not None and row["run"] != previous:
            table.add_section()
        run = Text(str(row["run"]) if row["run"] != previous else "")
        if row.get("method"):
            run.append(f"\n{row['method']}", style="dim")
        previous = row["run"]
        table.add_row(
            run,
            row["system"],
            *(cell(row) for cell in cells.values()),
            style="bold" if row["system"] == "federated" else None,
        )
    return table


def render_comparison(results: Sequence[RunResult], console: Console) -> None:
    """Print the comparison table of several runs."""
    rows = comparison_rows(results)
    console.print(comparison_table(rows, wide=console.width >= _WIDE_ENOUGH))
