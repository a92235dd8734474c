"""PNG plots of finished runs: accuracy per round, bytes on the wire, comparisons.

Figures use matplotlib's object API on the Agg canvas (no pyplot global state, no
display needed); matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fedpeft.reporting.formatting import (
    accuracy,
    fraction_of_full,
    human_bytes,
    percent,
)
from fedpeft.reporting.runs import RunResult, load_run, load_runs, run_labels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_Corner = Literal["lower right", "upper left"]
_DPI = 120
_CURVE_STYLE = {  # run name in metrics.jsonl -> (colour, label)
    "federated": ("C0", "federated"),
    "centralized": ("C1", "centralized (same example budget)"),
    "full-finetune": ("C2", "full fine-tuning (FedAvg)"),
}


def plot_run(run_dir: Path | str) -> list[Path]:
    """Write ``plots/accuracy.png`` and ``plots/bytes.png`` of a finished run.

    accuracy.png: test accuracy vs round of the federated run and of the
    centralized and full fine-tuning curves when present, scalar baselines
    (linear probe, zero-shot, local-only) as dashed lines, the convergence target
    (centralized accuracy − 1 point) dotted.
    bytes.png: cumulative bytes (up + down) per participating client vs round, log
    scale, next to what FedAvg with the full model would send.

    Raises:
        FileNotFoundError: if ``run_dir`` has no ``summary.json``.

    Returns:
        The two paths written.
    """
    result = load_run(run_dir)
    out = result.run_dir / "plots"
    paths = [
        _save(_accuracy_figure(result), out / "accuracy.png"),
        _save(_bytes_figure(result), out / "bytes.png"),
    ]
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def plot_compare(run_dirs: Sequence[Path | str], out: Path | str) -> Path:
    """Write one PNG comparing runs: accuracy curves (federated solid, centralized
    dashed, one colour per run) and payload bytes per client per round (log scale).

    Raises:
        ValueError: if ``run_dirs`` is empty.
        FileNotFoundError: if a directory has no ``summary.json``.
    """
    if not run_dirs:
        raise ValueError("plot_compare needs at least one run directory")
    results = load_runs(run_dirs)
    labels = run_labels(results)
    fig = _figure((13.0, 5.0))
    acc_ax, bytes_ax = fig.subplots(1, 2, width_ratios=(3, 2))
    _compare_accuracy(acc_ax, results, labels)
    _compare_bytes(bytes_ax, results, labels)
    fig.suptitle(
        f"fedpeft: {len(results)} run{'s' * (len(results) > 1)} compared",
        fontweight="bold",
    )
    return _save(fig, Path(out))


# --- figure plumbing ------------------------------------------------------------------


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _titles(fig: Figure, ax: Axes, summary: dict[str, Any], what: str) -> None:
    fig.suptitle(
        f"{what}: {summary.get('corpus', '?')}, {summary.get('method', '?')} "
        f"+ {summary.get('strategy', '?')}",
        fontweight="bold",
    )
    partition = summary.get("partition")
    alpha = (
        f" α={summary['alpha']}"
        if partition == "dirichlet" and "alpha" in summary
        else ""
    )
    skew = f", {partition}{alpha} partition" if partition else ""
    ax.set_title(
        f"{summary.get('backbone', '?')}, {summary.get('num_clients', '?')} "
        f"clients{skew}, seed {summary.get('seed', '?')}",
        fontsize=9,
        color="0.35",
    )


def _legend(ax: Axes, loc: _Corner, fontsize: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=fontsize, framealpha=0.9)
    else:
        ax.text(
            0.5,
            0.5,
            "no metrics recorded",
            transform=ax.transAxes,
            ha="center",
            color="0.5",
        )


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _style_accuracy_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)


def _style_bytes_axis(ax: Axes) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    ax.grid(alpha=0.3, which="major")


# --- one run --------------------------------------------------------------------------


def _accuracy_figure(result: RunResult) -> Figure:
    fig = _figure((8.0, 5.0))
    ax = fig.add_subplot()
    for run in result.curve_runs():
        color, label = _CURVE_STYLE.get(run, (None, run))
        rounds, acc = result.curve(run)
        fed = run == "federated"
        ax.plot(
            rounds,
            acc,
            color=color,
            label=label,
            marker="o" if fed else None,
            markersize=3.5,
            linewidth=2.2 if fed else 1.6,
            zorder=3 if fed else 2,
        )
    _scalar_baselines(ax, result)
    _centralized_target(ax, result)
    _style_accuracy_axis(ax)
    _legend(ax, "lower right", 8)
    _titles(fig, ax, result.summary, "Test accuracy")
    return fig


def _scalar_baselines(ax: Axes, result: RunResult) -> None:
    """Baselines without a curve (linear probe, zero-shot, local-only): dashed."""
    curves = set(result.curve_runs())
    extra = (f"C{i}" for i in range(3, 10))
    for name, metrics in result.baselines.items():
        acc = metrics.get("test_accuracy")
        if name in curves or not isinstance(acc, (int, float)):
            continue
        ax.axhline(
            acc,
            linestyle="--",
            linewidth=1.2,
            color=next(extra, "0.5"),
            label=f"{name} ({accuracy(acc)})",
        )


def _centralized_target(ax: Axes, result: RunResult) -> None:
    """The convergence target line (centralized − 1 point), and the first round
    from 1 on where the federated run reaches it (summary's ``convergence``)."""
    central = result.baselines.get("centralized", {}).get("test_accuracy")
    if not isinstance(central, (int, float)):
        return
    conv = result.federated.get("convergence")
    conv = conv if isinstance(conv, dict) else {}
    target = conv.get("target")
    target = target if isinstance(target, (int, float)) else central - 0.01
    ax.axhline(
        target,
        linestyle=":",
        linewidth=1.2,
        color="C1",
        label=f"centralized − 1 pt ({accuracy(target)})",
    )
    reached = conv.get("rounds")
    if isinstance(reached, int):
        ax.axvline(
            reached,
            linestyle=":",
            linewidth=1.0,
            color="0.4",
            label=f"federated reaches it at round {reached}",
        )


def per_client_bytes(record: dict[str, Any]) -> float:
    """Bytes (up + down) one participating client exchanged in a round's record."""
    up, down = record.get("bytes_up_per_client"), record.get("bytes_down_per_client")
    if isinstance(up, (int, float)) and isinstance(down, (int, float)):
        return float(up) + float(down)
    clients = record.get("clients") or []
    total = float(record.get("bytes_up", 0)) + float(record.get("bytes_down", 0))
    return total / len(clients) if clients else 0.0


def _bytes_figure(result: RunResult) -> Figure:
    fig = _figure((8.0, 5.0))
    ax = fig.add_subplot()
    records = sorted(result.records("federated"), key=lambda r: int(r["round"]))
    rounds = [int(r["round"]) for r in records]
    cumulative = list(accumulate(per_client_bytes(r) for r in records))
    shown = [(x, y) for x, y in zip(rounds, cumulative, strict=True) if y > 0]
    method = result.summary.get("method", "adapter")
    if shown:
        ax.plot(
            *zip(*shown, strict=True),
            marker="o",
            markersize=3.5,
            linewidth=2.2,
            color="C0",
            label=f"federated {method} (measured)",
        )
    full = result.federated.get("full_model_bytes")
    trained = [x for x in rounds if x > 0]
    if isinstance(full, (int, float)) and full > 0 and trained:
        ax.plot(
            trained,
            [2 * full * x for x in trained],
            linestyle="--",
            color="C3",
            linewidth=1.6,
            label=f"full fine-tuning equivalent ({human_bytes(full)} "
            "each way per round)",
        )
    _style_bytes_axis(ax)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative bytes per participating client (up + down)")
    _legend(ax, "upper left", 8)
    _payload_note(ax, result)
    _titles(fig, ax, result.summary, "Communication")
    return fig


def _payload_note(ax: Axes, result: RunResult) -> None:
    fed = result.federated
    fraction = fed.get("payload_fraction_of_full")
    if not isinstance(fraction, (int, float)):
        return
    text = (
        f"per client per round: {human_bytes(fed.get('bytes_up_per_client_round'))} "
        f"up, {human_bytes(fed.get('bytes_down_per_client_round'))} down\n"
        f"= {percent(fraction)} ({fraction_of_full(fraction)})"
    )
    ax.text(
        0.98,
        0.03,
        text,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )


# --- several runs ---------------------------------------------------------------------


def _compare_accuracy(
    ax: Axes, results: Sequence[RunResult], labels: Sequence[str]
) -> None:
    for i, (result, label) in enumerate(zip(results, labels, strict=True)):
        color = f"C{i % 10}"
        rounds, acc = result.curve("federated")
        ax.plot(
            rounds,
            acc,
            color=color,
            marker="o",
            markersize=3,
            linewidth=2,
            label=f"{label} ({result.summary.get('method')} + "
            f"{result.summary.get('strategy')})",
        )
        rounds, acc = result.curve("centralized")
        if rounds:
            ax.plot(
                rounds,
                acc,
                color=color,
                linestyle="--",
                linewidth=1.2,
                alpha=0.8,
                label=f"{label}: centralized",
            )
    _style_accuracy_axis(ax)
    ax.set_title("Test accuracy (solid: federated, dashed: centralized)", fontsize=10)
    _legend(ax, "lower right", 7)


def _compare_bytes(
    ax: Axes, results: Sequence[RunResult], labels: Sequence[str]
) -> None:
    import numpy as np

    x = np.arange(len(results))
    width = 0.38
    for offset, key, name, hatch in (
        (-width / 2, "bytes_up_per_client_round", "up", ""),
        (width / 2, "bytes_down_per_client_round", "down", "//"),
    ):
        values = [float(r.federated.get(key) or 0.0) for r in results]
        bars = ax.bar(
            x + offset,
            values,
            width,
            label=name,
            hatch=hatch,
            color=[f"C{i % 10}" for i in range(len(results))],
            edgecolor="white",
        )
        ax.bar_label(
            bars, labels=[human_bytes(v) for v in values], fontsize=7, padding=2
        )
    fulls = sorted(
        {
            int(f)
            for r in results
            if isinstance(f := r.federated.get("full_model_bytes"), (int, float))
        }
    )
    heights = [
        v
        for r in results
        for k in ("bytes_up_per_client_round", "bytes_down_per_client_round")
        if (v := float(r.federated.get(k) or 0)) > 0
    ]
    if heights:
        ax.set_ylim(min(heights) / 4, max([*heights, *fulls]) * 6)
    for full in fulls:
        ax.axhline(full, linestyle="--", color="0.3", linewidth=1.2)
        ax.annotate(
            f"full model {human_bytes(full)}",
            (0.98, full),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
    _style_bytes_axis(ax)
    ax.set_xticks(
        x,
        labels,
        rotation=20 if len(results) > 3 else 0,
        ha="right" if len(results) > 3 else "center",
        fontsize=8,
    )
    ax.set_ylabel("bytes per client per round")
    ax.set_title("Payload per client per round (left: up, hatched: down)", fontsize=10)
