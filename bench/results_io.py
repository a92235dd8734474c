"""Writing a benchmark's numbers: per-cell JSON caches and the results file
that several runs of one script add their parts to."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpeft.config import load_config
from fedpeft.engine.runner import run_experiment
from fedpeft.rundir.files import write_atomic


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2))


def merge_results(path: Path, stored: dict[str, Any]) -> None:
    """Add this run's sections to the results file, keeping the others."""
    latest = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**latest, **stored})


def cached_run(overrides: Sequence[str]) -> dict[str, Any]:
    """The summary of the run ``overrides`` configure: read from its run
    directory when it finished before, else run (resuming a checkpoint)."""
    cfg = load_config(None, list(overrides))
    summary_path = cfg.run_dir / "summary.json"
    if summary_path.exists():
        return dict(json.loads(summary_path.read_text()))
    started = time.perf_counter()
    summary = run_experiment(cfg, resume=True)
    print(
        f"  {cfg.name}: {summary['federated']['final_accuracy']:.4f} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return summary
