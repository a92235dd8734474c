"""Describe a partition: a per-client table (rich) and a label-mix chart (PNG)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from fedpeft.data.partition import label_distribution

logger = logging.getLogger(__name__)

_MAX_CLASS_COLUMNS = 10  # beyond this the table shows each client's top classes
_TOP_CLASSES = 3


def partition_table(
    labels: npt.NDArray[Any],
    parts: Sequence[npt.NDArray[Any]],
    label_names: Sequence[str],
) -> list[dict[str, object]]:
    """One row per client describing its share of the data.

    Args:
        labels: Class ids of the whole dataset, shape ``(n,)``.
        parts: One index array per client (from ``partition_indices``).
        label_names: Name of each class id.

    Returns:
        Rows with keys ``client`` (int), ``size`` (int), ``counts`` (class name
        to count), ``dominant_class`` (str) and ``dominant_share`` (float in
        ``[0, 1]``, 0 for an empty client).
    """
    counts = label_distribution(labels, parts, len(label_names))  # (clients, classes)
    rows: list[dict[str, object]] = []
    for client, row in enumerate(counts):
        size = int(row.sum())
        top = int(row.argmax())
        rows.append(
            {
                "client": client,
                "size": size,
                "counts": {
                    name: int(c) for name, c in zip(label_names, row, strict=True)
                },
                "dominant_class": label_names[top],
                "dominant_share": float(row[top] / size) if size else 0.0,
            }
        )
    return rows


def render_partition_table(
    rows: Sequence[dict[str, object]], console: Console | None = None
) -> None:
    """Print rows from :func:`partition_table` as a rich table.

    With more than 10 classes, the per-class columns are replaced by each
    client's three most frequent classes.
    """
    if not rows:
        raise ValueError("no rows to render")
    names = list(_counts(rows[0]))
    wide = len(names) <= _MAX_CLASS_COLUMNS
    table = Table(title=f"Partition: {len(rows)} clients", show_footer=True)
    total = sum(_number(r, "size") for r in rows)
    table.add_column("client", footer="all", justify="right")
    table.add_column("size", footer=str(int(total)), justify="right")
    for name in names if wide else []:
        class_total = sum(_counts(r)[name] for r in rows)
        table.add_column(name, footer=str(class_total), justify="right")
    if not wide:
        table.add_column("top classes")
    table.add_column("dominant", footer="")
    for row in rows:
        table.add_row(*_cells(row, names, wide))
    (console or Console()).print(table)


def _counts(row: dict[str, object]) -> dict[str, int]:
    counts = row["counts"]
    if not isinstance(counts, dict):
        raise TypeError(f"row['counts'] must be a dict, got {type(counts).__name__}")
    return counts


def _number(row: dict[str, object], key: str) -> float:
    value = row[key]
    if not isinstance(value, (int, float)):
        raise TypeError(f"row[{key!r}] must be a number, got {value!r}")
    return value


def _cells(row: dict[str, object], names: list[str], wide: bool) -> list[str]:
    counts = _counts(row)
    if wide:
        middle = [str(counts[name]) for name in names]
    else:
        top = sorted(counts.items(), key=lambda item: -item[1])[:_TOP_CLASSES]
        middle = [", ".join(f"{name} {count}" for name, count in top if count)]
    share = _number(row, "dominant_share")
    dominant = f"{row['dominant_class']} ({share:.0%})"
    return [str(row["client"]), str(row["size"]), *middle, dominant]


def plot_partition(
    labels: npt.NDArray[Any],
    parts: Sequence[npt.NDArray[Any]],
    label_names: Sequence[str],
    path: Path,
) -> Path:
    """Save a stacked horizontal bar chart of each client's label mix as a PNG.

    One bar per client (client 0 at the top), its length the client's size,
    its segments the class counts.

    Args:
        labels: Class ids of the whole dataset, shape ``(n,)``.
        parts: One index array per client.
        label_names: Name of each class id.
        path: Where to write the PNG; parent folders are created.

    Returns:
        ``path``.
    """
    # The object-oriented API with the Agg canvas: no pyplot global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = label_distribution(labels, parts, len(label_names))  # (clients, classes)
    num_clients, num_classes = counts.shape
    fig = Figure(
        figsize=(9.0, min(2.0 + 0.28 * num_clients, 40.0)), layout="constrained"
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = _class_colors(num_classes)
    y = np.arange(num_clients)
    left = np.zeros(num_clients)
    for c, name in enumerate(label_names):
        ax.barh(y, counts[:, c], left=left, color=colors[c], label=name, height=0.8)
        left += counts[:, c]
    _label_axes(ax, num_clients, num_classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    logger.info("wrote partition chart %s", path)
    return path


def _class_colors(num_classes: int) -> list[Any]:
    from matplotlib import colormaps

    name = "tab10" if num_classes <= 10 else "tab20"
    cmap = (
        colormaps[name]
        if num_classes <= 20
        else colormaps["turbo"].resampled(num_classes)
    )
    return [cmap(i % cmap.N) for i in range(num_classes)]


def _label_axes(ax: Any, num_clients: int, num_classes: int) -> None:
    step = max(1, num_clients // 50)  # at most ~50 tick labels
    ticks = np.arange(0, num_clients, step)
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(i) for i in ticks], fontsize=8)
    ax.set_ylim(num_clients - 0.5, -0.5)  # client 0 on top, no empty margin
    ax.set_xlabel("examples")
    ax.set_ylabel("client")
    ax.set_title("Label mix per client")
    ax.legend(
        title="class",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        ncols=1 if num_classes <= 20 else 2,
        frameon=False,
    )
