"""Writing a run's files so that a crash never leaves half of one behind."""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` in one step: written to a hidden temporary
    file beside it, flushed, then renamed over it (text as UTF-8)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_synced(tmp, data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
