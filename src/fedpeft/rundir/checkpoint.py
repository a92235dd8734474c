"""Crash-safe, tamper-evident checkpoints of a federated run.

Each checkpoint is a new directory ``round-XXXXX`` holding the global parameters
and the strategy state (safetensors) and ``state.json`` (round, history, extra,
and the SHA-256 of each array file). The file ``LATEST`` reads
``round-XXXXX <SHA-256 of its state.json>`` and is replaced atomically, so a run
killed while writing leaves the previous checkpoint intact, and every file of a
checkpoint is covered by a hash: an edited or damaged array file, state.json
(its round, its history) or LATEST is reported instead of being resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpeft.rundir.files import write_atomic, write_synced
from fedpeft.types import Params
from fedpeft.wire import deserialize, serialize

logger = logging.getLogger(__name__)

LATEST = "LATEST"
STATE = "state.json"
ARRAYS = ("params", "strategy")
_POINTER = re.compile(r"(round-(\d{5,})) ([0-9a-f]{64})")
FIX = "start the run again with --overwrite (this deletes the run directory)"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    params: Params
    strategy_state: Params
    history: list[dict[str, Any]]
    extra: dict[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    for name, arrays in zip(ARRAYS, (ckpt.params, ckpt.strategy_state), strict=True):
        blob = serialize(arrays)
        write_synced(staging / f"{name}.safetensors", blob)
        hashes[name] = _sha256(blob)
    state = {
        "round": ckpt.round,
        "history": ckpt.history,
        "extra": ckpt.extra,
        "sha256": hashes,
    }
    state_blob = json.dumps(state).encode("utf-8")
    write_synced(staging / STATE, state_blob)
    os.replace(staging, target)
    write_atomic(directory / LATEST, f"{target.name} {_sha256(state_blob)}\n".encode())
    for old in sorted(directory.glob("round-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint under ``directory``, or None if there is none.

    Logs what resuming will do (INFO when resuming, WARNING when there is
    nothing to resume from).

    Raises:
        CheckpointError: if any checkpoint file fails its hash or is missing or
            unreadable, or if round directories exist but ``LATEST`` does not.
    """
    located = _locate(directory)
    if located is None:
        logger.warning("%s", _describe(directory, None, None))
        return None
    target, state = located
    arrays = {name: _load_arrays(target, name, state) for name in ARRAYS}
    logger.info("%s", _describe(directory, located, None))
    return Checkpoint(
        int(state["round"]),
        arrays["params"],
        arrays["strategy"],
        list(state["history"]),
        dict(state.get("extra", {})),
    )


def describe_resume(directory: Path, total_rounds: int | None = None) -> str:
    """What resuming from ``directory`` will do, in one sentence, e.g.
    ``resuming after round 3 of 6 from runs/x/checkpoint/round-00003``.

    Checks LATEST and state.json (not the array files, which
    :func:`load_checkpoint` checks as it reads them).

    Raises:
        CheckpointError: as :func:`load_checkpoint` would.
    """
    return _describe(directory, _locate(directory), total_rounds)


def _describe(
    directory: Path,
    located: tuple[Path, dict[str, Any]] | None,
    total_rounds: int | None,
) -> str:
    if located is None:
        return f"no checkpoint in {directory}: starting from round 0"
    target, state = located
    done = int(state["round"])
    if total_rounds is not None and done >= total_rounds:
        return f"round {done} of {total_rounds} is done ({target}): nothing to train"
    of = f" of {total_rounds}" if total_rounds is not None else ""
    return f"resuming after round {done}{of} from {target}"


def _locate(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint LATEST names and its verified state (None: no checkpoint)."""
    pointer = directory / LATEST
    if not pointer.exists():
        rounds = sorted(directory.glob("round-*")) if directory.is_dir() else []
        if rounds:
            raise CheckpointError(_missing_latest(directory, rounds[-1]))
        return None
    text = pointer.read_text(encoding="utf-8", errors="replace").strip()
    match = _POINTER.fullmatch(text)
    if match is None:
        raise CheckpointError(
            f"{pointer} is damaged: it reads {text[:120]!r}, expected "
            f"'round-NNNNN <SHA-256 of its {STATE}>'; {FIX}"
        )
    target = directory / match[1]
    try:
        blob = (target / STATE).read_bytes()
    except OSError as err:
        raise CheckpointError(
            f"checkpoint {target} named by {pointer} is unreadable ({err}); {FIX}"
        ) from None
    if _sha256(blob) != match[3]:
        raise CheckpointError(
            f"checkpoint {target} is corrupt: {target / STATE} does not match the "
            f"hash in {pointer} (was it edited?); restore it or {FIX}"
        )
    state = _parse_state(target, blob)
    if state["round"] != int(match[2]):
        raise CheckpointError(
            f"checkpoint {target} is corrupt: its {STATE} says round "
            f"{state['round']}; {FIX}"
        )
    return target, state


def _parse_state(target: Path, blob: bytes) -> dict[str, Any]:
    try:
        state = json.loads(blob)
        if not (
            isinstance(state, dict)
            and isinstance(state.get("round"), int)
            and isinstance(state.get("history"), list)
            and all(isinstance(state["sha256"].get(n), str) for n in ARRAYS)
        ):
            raise ValueError("missing round, history or sha256")
    except (ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(
            f"checkpoint {target} is unreadable: {target / STATE} ({err}); {FIX}"
        ) from None
    return state


def _load_arrays(target: Path, name: str, state: dict[str, Any]) -> Params:
    path = target / f"{name}.safetensors"
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(
            f"checkpoint {target} is unreadable ({err}); {FIX}"
        ) from None
    if _sha256(blob) != state["sha256"][name]:
        raise CheckpointError(
            f"checkpoint {target} is corrupt: {path.name} does not match its "
            f"hash in {STATE}; {FIX}"
        )
    try:
        return deserialize(blob)
    except ValueError as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({err}); {FIX}"
        ) from None


def _missing_latest(directory: Path, newest: Path) -> str:
    """Why a checkpoint without LATEST is not resumed, and how to restore it.

    LATEST carries the only hash of state.json, so without it an edited round
    or history cannot be told from the real one. Resuming from round 0 would
    silently redo (and overwrite) the finished rounds, and guessing the newest
    directory would resume from unverified state; instead the user decides,
    with the exact line that restores the pointer.
    """
    pointer = directory / LATEST
    head = (
        f"{pointer} is missing, but {directory} holds {newest.name}/. LATEST "
        f"names the checkpoint to resume and carries the hash of its {STATE}, "
        "so fedpeft will not guess"
    )
    try:
        blob = (newest / STATE).read_bytes()
        state = _parse_state(newest, blob)
        for name in ARRAYS:
            _load_arrays(newest, name, state)
    except (OSError, CheckpointError) as err:
        return f"{head}; {newest.name} is not usable either ({err})"
    restore = f"printf '{newest.name} {_sha256(blob)}\\n' > {shlex.quote(str(pointer))}"
    return (
        f"{head}. If you trust {newest} (round {state['round']}), restore the "
        f"pointer with\n  {restore}\nand resume again; otherwise {FIX}"
    )
