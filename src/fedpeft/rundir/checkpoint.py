"""Crash-safe checkpoints of a federated run.

Each checkpoint is a new directory ``round-XXXXX`` holding the global parameters
and the strategy state (safetensors) and ``state.json`` (round, history, SHA-256
of each array file). The file ``LATEST`` names the newest complete directory and
is replaced atomically, so a run killed while writing leaves the previous
checkpoint intact; a damaged checkpoint is detected by its hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpeft.types import Params
from fedpeft.wire import deserialize, serialize

LATEST = "LATEST"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    params: Params
    strategy_state: Params
    history: list[dict[str, Any]]
    extra: dict[str, Any]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: Path, ckpt: Checkpoint, keep: int = 1) -> Path:
    """Write ``ckpt`` under ``directory`` and point ``LATEST`` at it.

    Older checkpoint directories beyond the newest ``keep`` are removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"round-{ckpt.round:05d}"
    if target.exists():
        shutil.rmtree(target)
    staging = directory / f".staging-{ckpt.round:05d}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    hashes = {}
    for name, arrays in (("params", ckpt.params), ("strategy", ckpt.strategy_state)):
        blob = serialize(arrays)
        (staging / f"{name}.safetensors").write_bytes(blob)
        hashes[name] = hashlib.sha256(blob).hexdigest()
    state = {
        "round": ckpt.round,
        "history": ckpt.history,
        "extra": ckpt.extra,
        "sha256": hashes,
    }
    (staging / "state.json").write_text(json.dumps(state), encoding="utf-8")
    os.replace(staging, target)
    _write_atomic(directory / LATEST, target.name.encode())
    for old in sorted(directory.glob("round-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint under ``directory``, or None if there is none.

    Raises:
        CheckpointError: if the checkpoint is missing files or fails its hashes.
    """
    pointer = directory / LATEST
    if not pointer.exists():
        return None
    target = directory / pointer.read_text(encoding="utf-8").strip()
    fix = f"delete {directory} to start the run afresh, or run without --resume"
    try:
        state = json.loads((target / "state.json").read_text(encoding="utf-8"))
        arrays = {}
        for name in ("params", "strategy"):
            blob = (target / f"{name}.safetensors").read_bytes()
            if hashlib.sha256(blob).hexdigest() != state["sha256"][name]:
                raise CheckpointError(
                    f"checkpoint {target} is corrupt: {name}.safetensors "
                    f"does not match its hash; {fix}"
                )
            arrays[name] = deserialize(blob)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint {target} is unreadable ({err}); {fix}"
        ) from None
    return Checkpoint(
        int(state["round"]),
        arrays["params"],
        arrays["strategy"],
        list(state["history"]),
        dict(state.get("extra", {})),
    )
