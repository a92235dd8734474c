"""Rich tables of one run: its rounds, and its result against the baselines.

The render functions take a :class:`rich.console.Console` so the CLI decides where
output goes; :mod:`fedpeft.reporting.live` shows :func:`round_cells` while a run
goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fedpeft.reporting.formatting import (
    MISSING,
    accuracy,
    duration,
    fraction_of_full,
    human_bytes,
    percent,
    points_gap,
    score,
)

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
        str(record.get("round", MISSING)),
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
    return MISSING


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
    groups = "final_worst_group_accuracy" in fed
    columns = ["system", "final acc", "best acc", "macro-F1"]
    columns += ["worst group"] if groups else []
    for column in (*columns, "federated vs this"):
        system = column == "system"
        table.add_column(column, justify="left" if system else "right", no_wrap=system)
    method = f"{summary.get('method', '?')} + {summary.get('strategy', '?')}"
    worst = [_worst(fed, "final_")] if groups else []
    table.add_row(
        Text(f"federated ({method})", style="bold cyan"),
        accuracy(final),
        accuracy(fed.get("best_accuracy")),
        score(fed.get("final_macro_f1")),
        *worst,
        "",
    )
    for name, metrics in summary.get("baselines", {}).items():
        acc = metrics.get("test_accuracy")
        table.add_row(
            name,
            accuracy(acc),
            accuracy(metrics.get("best_accuracy")),
            score(metrics.get("test_macro_f1")),
            *([_worst(metrics, "test_")] if groups else []),
            points_gap(final, acc),
        )
    return table


def _worst(metrics: Mapping[str, Any], prefix: str) -> str:
    """The worst group's accuracy and, where one group is named, which
    (``federation.eval_groups``); local-only averages clients' worst groups."""
    acc = accuracy(metrics.get(f"{prefix}worst_group_accuracy"))
    group = metrics.get(f"{prefix}worst_group")
    return f"{acc} ({group})" if group else acc


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
        *_convergence_items(summary, fed),
        (
            "wall time (federated)",
            f"{duration(fed.get('wall_seconds'))} "
            f"({score(fed.get('train_examples_per_second'), '.0f')} "
            "train examples/s)",
        ),
    ]


def _convergence_items(
    summary: Mapping[str, Any], fed: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """What federated training took to reach centralized − 1 pt (from round 1),
    and, on its own line, where the warm start (round 0) already stood."""
    conv = fed.get("convergence")
    if not isinstance(conv, Mapping):
        return _old_convergence_items(summary, fed)
    target, reached = conv.get("target"), conv.get("rounds")
    if not isinstance(target, (int, float)):
        cost = f"{MISSING} (no centralized baseline)"
    elif reached is None:
        cost = f"not reached in {summary.get('rounds', '?')} rounds"
    else:
        cost = (
            f"round {reached} of {summary.get('rounds', '?')}: "
            f"{human_bytes(conv.get('bytes'))} up + down "
            f"({human_bytes(conv.get('bytes_per_client'))} per client), "
            f"{_flops(conv.get('client_flops'))} on clients"
        )
    met = conv.get("warm_start_met_target")
    verdict = {True: ", already at the target", False: ", below the target"}
    warm = accuracy(conv.get("warm_start_accuracy")) + (
        verdict[met] if isinstance(met, bool) else ""
    )
    return [
        (f"to centralized − 1 pt ({accuracy(target)})", cost),
        ("warm start (round 0)", warm),
    ]


def _old_convergence_items(
    summary: Mapping[str, Any], fed: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The rounds-to-95% line of summaries written before ``convergence``."""
    if "rounds_to_95pct_centralized" not in fed:
        return []
    rounds_95 = fed["rounds_to_95pct_centralized"]
    central = "centralized" in summary.get("baselines", {})
    reached = (
        f"round {rounds_95} of {summary.get('rounds', '?')} (round 0 counted)"
        if rounds_95 is not None
        else "not reached"
        if central
        else f"{MISSING} (no centralized baseline)"
    )
    return [("rounds to 95% of centralized (old summary)", reached)]


def _flops(value: Any) -> str:
    """``3.1 TFLOP``, ``420 GFLOP`` (decimal prefixes); ``—`` when missing."""
    if not isinstance(value, (int, float)):
        return MISSING
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:,.0f} FLOP"


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
