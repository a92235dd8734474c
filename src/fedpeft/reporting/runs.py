"""Finished runs read back from their directories.

A run directory (written by :func:`fedpeft.engine.runner.run_experiment`) holds
``summary.json`` and ``metrics.jsonl``; :func:`load_run` reads both into a
:class:`RunResult`, which the tables (:mod:`fedpeft.reporting.tables`,
:mod:`fedpeft.reporting.compare`) and plots (:mod:`fedpeft.reporting.plots`) read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpeft.rundir.sink import read_metrics

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunResult:
    """A finished run read back from its directory.

    Attributes:
        run_dir: The run directory.
        summary: The content of ``summary.json`` (schema in ``fedpeft.engine.summary``).
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
