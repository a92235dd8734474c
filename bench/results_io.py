"""Writing a benchmark's numbers: per-cell JSON caches and the results file
that several runs of one script add their parts to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedpeft.rundir.files import write_atomic


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2))


def merge_results(path: Path, stored: dict[str, Any]) -> None:
    """Add this run's sections to the results file, keeping the others."""
    latest = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**latest, **stored})
