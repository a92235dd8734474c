"""Read finished runs back and render them as rich tables.

A run directory (written by :func:`fedpeft.engine.runner.run_experiment`) holds
``summary.json`` and ``metrics.jsonl``; :func:`load_run` reads both. The render
functions take a :class:`rich.console.Console` so the CLI decides where output goes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fedpeft.rundir.sink import read_metrics

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
_MISSING = "—"


@dataclass(frozen=True)
class RunResult:
    """A finished run read back from its directory.

    Attributes:
        run_dir: The run directory.
        summary: The content of ``summary.json`` (schema in ``fedpeft.engine.runner``).
        metrics: The records of ``metrics.jsonl``; each has ``run`` and ``round``.
    """

    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return str(self.summary.get("name", self.run_dir.name))

    @property
    def federated(self) -> dict[str, Any]:
        """The summary's ``federated`` section (empty if absent)."""
        section = self.summary.get("federated")
        return section if isinstance(section, dict) else {}

    @property
    def baselines(self) -> dict[str, dict[str, Any]]:
        """Baseline name to its metrics: ``{"linear-probe": {"test_accuracy": …}}``."""
        section = self.summary.get("baselines")
        return section if isinstance(section, dict) else {}

    def records(self, run: str) -> list[dict[str, Any]]:
        """The metric records of one run (``"federated"``, ``"centralized"``, …)."""
        return [r for r in self.metrics if r.get("run") == run]

    def curve(
        self, run: str, key: str = "test_accuracy"
    ) -> tuple[list[int], list[float]]:
        """``(rounds, values)`` of ``key`` in the records of ``run`` that set it."""
        points = [
            (int(r["round"]), float(r[key]))
            for r in self.records(run)
            if isinstance(r.get(key), (int, float))
        ]
        return [p[0] for p in points], [p[1] for p in points]

    def curve_runs(self) -> list[str]:
        """Runs with an accuracy curve, in order of first appearance."""
        seen: dict[str, None] = {}
        for r in self.metrics:
            if r.get("test_accuracy") is not None:
                seen.setdefault(str(r.get("run")), None)
        return list(seen)


def load_run(run_dir: Path | str) -> RunResult:
    """Read ``summary.json`` and (if present) ``metrics.jsonl`` of a run directory.

    Raises:
        FileNotFoundError: if ``run_dir`` or its ``summary.json`` does not exist.
        ValueError: if ``summary.json`` is not a JSON object.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {SUMMARY_FILE}: it is not a finished fedpeft run "
            "(an interrupted run finishes with `fedpeft run CONFIG --resume`)"
        )
    summary = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError(
            f"{path} holds {type(summary).__name__}, expected a JSON object"
        )
    metrics_path = run_dir / METRICS_FILE
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    return RunResult(run_dir, summary, metrics)


def load_runs(run_dirs: Iterable[Path | str]) -> list[RunResult]:
    """:func:`load_run` over several directories (same errors)."""
    return [load_run(d) for d in run_dirs]


def run_labels(results: Sequence[RunResult]) -> list[str]:
    """A short distinct label per run: its name, or its path where names repeat."""
    names = [r.name for r in results]
    return [str(r.run_dir) if names.count(r.name) > 1 else r.name for r in results]


# --- formatting -----------------------------------------------------------------------


def human_bytes(size: float | None) -> str:
    """``31.1 kB``, ``87.6 MB`` (decimal units); ``—`` for None."""
    if size is None or not math.isfinite(size):
        return _MISSING
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):  # noqa: B007  (unit used after)
        if abs(value) < 999.5:
            break
        value /= 1000.0
    return f"{value:.0f} B" if unit == "B" else f"{value:.3g} {unit}"


def fraction_of_full(fraction: float | None) -> str:
    """A payload share as a ratio: ``1/2,650 of the full model``; ``—`` if unknown."""
    if fraction is None or not math.isfinite(fraction) or fraction <= 0:
        return _MISSING
    if fraction >= 1:
        return f"{fraction:.2g}× the full model"
    return f"1/{round(1 / fraction):,} of the full model"


def percent(value: float | None, digits: int = 3) -> str:
    """``0.0377%``, ``12.5%``, ``100%`` (significant digits); ``—`` for None."""
    if value is None or not math.isfinite(value):
        return _MISSING
    return f"{100 * value:.{digits}g}%"


def accuracy(value: Any) -> str:
    """An accuracy in ``[0, 1]`` as ``81.2%``; ``—`` when missing."""
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else _MISSING


def score(value: Any, fmt: str = ".3f") -> str:
    """A number with ``fmt``; ``—`` when missing."""
    return format(value, fmt) if isinstance(value, (int, float)) else _MISSING


def duration(seconds: float | None) -> str:
    """``42.1 s``, ``3m 12s``, ``1h 02m``; ``—`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return _MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def points_gap(value: Any, reference: Any) -> str:
    """``value - reference`` in percentage points, e.g. ``+3.1 pts``."""
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)):
        return _MISSING
    gap = 100 * (value - reference)
    return f"{gap:+.1f} pts"


# --- one round ------------------------------------------------------------------------

ROUND_COLUMNS = (
    "round",
    "test acc",
    "macro-F1",
    "train loss",
    "p10 val acc",
    "ε",
    "up/client",
    "sec",
)
"""Columns of :func:`rounds_table`; p10 val acc is the worst-decile client's
validation accuracy, ε the client-level privacy loss so far (``rec`` marks the
worst client's record-level ε), up/client the bytes one client uploaded."""


def round_cells(record: Mapping[str, Any]) -> list[str]:
    """The cells of :data:`ROUND_COLUMNS` for one metrics record (``—`` if unset)."""
    return [
        str(record.get("round", _MISSING)),
        accuracy(record.get("test_accuracy")),
        score(record.get("test_macro_f1")),
        score(_first(record, "client_train_loss_mean", "local_train_loss_mean")),
        accuracy(record.get("client_val_accuracy_p10")),
        _epsilon(record),
        human_bytes(_per_client_up(record)),
        score(record.get("round_seconds"), ".1f"),
    ]


def _epsilon(record: Mapping[str, Any]) -> str:
    """Client-level ε, else the worst record-level ε (``rec``), else ``—``."""
    if isinstance(record.get("epsilon"), (int, float)):
        return f"{record['epsilon']:.2f}"
    if isinstance(record.get("record_epsilon_max"), (int, float)):
        return f"rec {record['record_epsilon_max']:.2f}"
    return _MISSING


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` that ``record`` sets (None if none)."""
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _per_client_up(record: Mapping[str, Any]) -> float | None:
    if isinstance(record.get("bytes_up_per_client"), (int, float)):
        return float(record["bytes_up_per_client"])
    clients = record.get("clients") or []
    up = record.get("bytes_up")
    return (
        float(up) / len(clients) if clients and isinstance(up, (int, float)) else None
    )


def rounds_table(
    records: Sequence[Mapping[str, Any]], title: str | None = None
) -> Table:
    """A table of metrics records, one row per round (p10 = worst-decile client)."""
    table = Table(
        title=title,
        title_justify="left",
        caption="p10 val acc: worst-decile client validation accuracy",
        caption_justify="left",
    )
    for i, column in enumerate(ROUND_COLUMNS):
        table.add_column(column, justify="right", style="bold" if i == 1 else None)
    for record in records:
        table.add_row(*round_cells(record))
    return table


# --- one finished run -----------------------------------------------------------------


def accuracy_table(summary: Mapping[str, Any]) -> Table:
    """The federated result next to every baseline, all on the same test set."""
    fed = summary.get("federated", {})
    final = fed.get("final_accuracy")
    table = Table(title="Test accuracy (same held-out test set)", title_justify="left")
    for column in ("system", "final acc", "best acc", "macro-F1", "federated vs this"):
        system = column == "system"
        table.add_column(column, justify="left" if system else "right", no_wrap=system)
    method = f"{summary.get('method', '?')} + {summary.get('strategy', '?')}"
    table.add_row(
        Text(f"federated ({method})", style="bold cyan"),
        accuracy(final),
        accuracy(fed.get("best_accuracy")),
        score(fed.get("final_macro_f1")),
        "",
    )
    for name, metrics in summary.get("baselines", {}).items():
        acc = metrics.get("test_accuracy")
        table.add_row(
            name,
            accuracy(acc),
            accuracy(metrics.get("best_accuracy")),
            score(metrics.get("test_macro_f1")),
            points_gap(final, acc),
        )
    return table


def cost_table(summary: Mapping[str, Any], run_dir: Path | None = None) -> Table:
    """Communication, size and time of the federated run as a two-column grid."""
    fed = summary.get("federated", {})
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    for key, value in _cost_items(summary, fed):
        grid.add_row(key, value)
    for key, value in _privacy_items(summary.get("privacy") or {}):
        grid.add_row(key, value)
    if run_dir is not None:
        grid.add_row("run directory", str(run_dir))
    return grid


def _privacy_items(privacy: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rows for the privacy guarantees a run reports (none without privacy)."""
    items = []
    if privacy.get("secagg"):
        items.append(("secure aggregation", "on (server saw only sums)"))
    if privacy.get("epsilon") is not None:
        items.append(
            (
                "client-level DP",
                f"ε = {privacy['epsilon']:.3g} at δ = {privacy['delta']:g} "
                f"(σ = {privacy['noise_multiplier']:.3g})",
            )
        )
    if privacy.get("record_epsilon_max") is not None:
        items.append(
            (
                "record-level DP",
                f"ε ≤ {privacy['record_epsilon_max']:.3g} at δ = "
                f"{privacy['record_delta']:g} for every client",
            )
        )
    return items


def _cost_items(
    summary: Mapping[str, Any], fed: Mapping[str, Any]
) -> list[tuple[str, str]]:
    trainable, total = (
        summary.get("trainable_parameters"),
        summary.get("backbone_parameters"),
    )
    share = (
        f" ({percent(trainable / total)} of the backbone)"
        if trainable and total
        else ""
    )
    up, down = (
        fed.get("bytes_up_per_client_round"),
        fed.get("bytes_down_per_client_round"),
    )
    fraction = fed.get("payload_fraction_of_full")
    rounds_95 = fed.get("rounds_to_95pct_centralized")
    central = "centralized" in summary.get("baselines", {})
    reached = (
        "round 0 (before federated training)"
        if rounds_95 == 0
        else f"round {rounds_95} of {summary.get('rounds', '?')}"
        if rounds_95 is not None
        else "not reached"
        if central
        else "— (no centralized baseline)"
    )
    return [
        ("trainable parameters", f"{score(trainable, ',')}{share}"),
        (
            "payload per client per round",
            f"{human_bytes(up)} up, {human_bytes(down)} down",
        ),
        (
            "payload vs full model",
            f"{percent(fraction)} = {fraction_of_full(fraction)} "
            f"({human_bytes(fed.get('full_model_bytes'))})",
        ),
        (
            "total traffic",
            f"{human_bytes(fed.get('bytes_up_total'))} up, "
            f"{human_bytes(fed.get('bytes_down_total'))} down",
        ),
        ("rounds to 95% of centralized", reached),
        (
            "wall time (federated)",
            f"{duration(fed.get('wall_seconds'))} "
            f"({score(fed.get('train_examples_per_second'), '.0f')} "
            "train examples/s)",
        ),
    ]


def render_run_summary(
    summary: Mapping[str, Any], console: Console, run_dir: Path | None = None
) -> None:
    """Print the accuracy comparison and the cost grid of one finished run."""
    heading = Text.assemble(
        ("Result ", "bold"),
        (str(summary.get("name", "")), "bold cyan"),
        f": {summary.get('corpus', '?')}, {summary.get('backbone', '?')}, "
        f"{summary.get('num_clients', '?')} clients, "
        f"{summary.get('rounds', '?')} rounds",
    )
    console.print(Group(heading, accuracy_table(summary), cost_table(summary, run_dir)))


# --- several runs ---------------------------------------------------------------------

_COMPARISON_CELLS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "final\nacc": lambda r: accuracy(r["final_accuracy"]),
    "best\nacc": lambda r: accuracy(r["best_accuracy"]),
    "macro\nF1": lambda r: score(r["macro_f1"]),
    "up": lambda r: human_bytes(r["bytes_up"]),
    "down": lambda r: human_bytes(r["bytes_down"]),
    "% of\nfull": lambda r: percent(r["fraction_of_full"]),
    "rounds\nto 95%": lambda r: score(r["rounds_to_95"], "d"),
    "wall\ntime": lambda r: duration(r["wall_seconds"]),
}
_NARROW_OMITS = ("best\nacc", "wall\ntime")  # dropped below _WIDE_ENOUGH columns
_WIDE_ENOUGH = 100


def comparison_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per run (its federated result) and per baseline of each run.

    Keys: ``run``, ``system`` ("federated" or the baseline name), ``method``
    ("prompt + fedavg" on federated rows, else None), ``final_accuracy``,
    ``best_accuracy``, ``macro_f1``, ``bytes_up``,
    ``bytes_down`` (per client per round), ``fraction_of_full``, ``rounds_to_95``,
    ``wall_seconds``; a value is None where it does not apply.
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
                "rounds_to_95": fed.get("rounds_to_95pct_centralized"),
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
        "rounds_to_95": None,
        "wall_seconds": metrics.get("wall_seconds"),
    }


def comparison_table(rows: Sequence[Mapping[str, Any]], wide: bool = True) -> Table:
    """Render :func:`comparison_rows`, federated rows in bold; ``wide=False`` omits
    the best accuracy and wall time columns (for consoles under 100 columns)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title="Comparison (each run on its own test set)",
        title_justify="left",
        caption="up, down: payload bytes per client per round; rounds to 95%: "
        "first round at 95% of centralized accuracy",
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
