"""Tests for fedpeft.data.report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from fedpeft.data.partition import partition_indices
from fedpeft.data.report import partition_table, plot_partition, render_partition_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels_and_parts(num_classes: int = 3, num_clients: int = 4) -> tuple:
    labels = np.repeat(np.arange(num_classes), 40)
    parts = partition_indices(
        labels, num_clients, "dirichlet", seed=0, alpha=0.5, min_size=5
    )
    return labels, parts


def test_table_rows_cover_every_example() -> None:
    labels, parts = _labels_and_parts()

    rows = partition_table(labels, parts, ["a", "b", "c"])

    assert [r["client"] for r in rows] == [0, 1, 2, 3]
    assert sum(r["size"] for r in rows) == len(labels)  # type: ignore[misc]
    for row, part in zip(rows, parts, strict=True):
        counts = row["counts"]
        assert isinstance(counts, dict) and sum(counts.values()) == len(part)


def test_table_reports_the_dominant_class_share() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    parts = [np.array([0, 1, 2, 3]), np.array([4, 5])]

    rows = partition_table(labels, parts, ["x", "y", "z"])

    assert rows[0]["dominant_class"] == "x" and rows[0]["dominant_share"] == 0.75
    assert rows[1]["counts"] == {"x": 0, "y": 1, "z": 1}


def test_render_prints_counts_and_totals() -> None:
    labels, parts = _labels_and_parts()
    console = Console(record=True, width=120)

    render_partition_table(partition_table(labels, parts, ["a", "b", "c"]), console)

    text = console.export_text()
    assert "Partition: 4 clients" in text and "dominant" in text
    assert "120" in text  # the size footer


def test_render_many_classes_shows_top_classes() -> None:
    labels, parts = _labels_and_parts(num_classes=12, num_clients=3)
    console = Console(record=True, width=120)

    render_partition_table(
        partition_table(labels, parts, [f"c{i}" for i in range(12)]), console
    )

    assert "top classes" in console.export_text()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    labels, parts = _labels_and_parts(num_classes=5, num_clients=8)
    path = tmp_path / "plots" / "partition.png"

    written = plot_partition(
        labels, parts, ["alpha", "beta", "gamma", "delta", "eps"], path
    )

    assert written == path
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
