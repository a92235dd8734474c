"""Metrics as JSON lines: one record per round, flushed as it is written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class MetricsSink:
    """Appends records to ``path``; :meth:`reset` rewrites it from a history."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def reset(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        """Rewrite the file with ``records`` (used when resuming from a checkpoint)."""
        with open(self.path, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(_clean(record)) + "\n")

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_clean(record)) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
