"""The one message format between a server runtime and a remote client node.

An envelope is a small JSON header (what to do, scalars) plus named arrays
(parameters, secure-aggregation blobs as ``uint8``). Its bytes are
``len(header) (4 bytes, big-endian) | header JSON | safetensors blob``; the
Flower runtime carries the same two parts as a ``ConfigRecord`` and an
``ArrayRecord`` (:mod:`fedpeft.flower.records`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedpeft.messages import Instruction, Task
from fedpeft.types import ClientUpdate, Params
from fedpeft.wire import deserialize, serialize

Arrays = dict[str, np.ndarray[Any, Any]]
"""Named arrays of any dtype (parameters are float32, protocol blobs uint8)."""
Kind = Literal["hello", "task", "secagg", "reply", "error"]
KINDS: tuple[str, ...] = ("hello", "task", "secagg", "reply", "error")
HEADER_LIMIT = 1 << 24
"""Largest header accepted (16 MiB); anything bigger is a corrupt message."""
PROTOCOL = "secagg/"
"""Name prefix of secure-sum blobs that ride on a task or its reply
(:mod:`fedpeft.remote.secure_sum`); they are not parameters."""


class EnvelopeError(ValueError):
    """A message that cannot be decoded or does not say what it must."""


@dataclass(frozen=True)
class Envelope:
    """One request or reply.

    Attributes:
        kind: ``hello`` (who are you, do our configs match), ``task`` (an
            :class:`~fedpeft.messages.Instruction`), ``secagg`` (one stage of a
            secure sum), ``reply`` or ``error`` (the node's answer).
        header: JSON-safe scalars and lists.
        arrays: Named arrays (a payload, an update, protocol blobs).
    """

    kind: Kind
    header: Mapping[str, Any] = field(default_factory=dict)
    arrays: Arrays = field(default_factory=dict)

    def encode(self) -> bytes:
        head = json.dumps({"kind": self.kind, **self.header}).encode()
        return len(head).to_bytes(4, "big") + head + serialize(self.arrays)

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Inverse of :meth:`encode`.

        Raises:
            EnvelopeError: truncated or corrupt bytes, or an unknown kind.
        """
        if len(data) < 4:
            raise EnvelopeError(f"message of {len(data)} bytes is truncated")
        size = int.from_bytes(data[:4], "big")
        if size > min(HEADER_LIMIT, len(data) - 4):
            raise EnvelopeError(
                f"message header claims {size} bytes of {len(data) - 4}; corrupt"
            )
        try:
            header = json.loads(data[4 : 4 + size])
        except ValueError as err:
            raise EnvelopeError(f"message header is not JSON: {err}") from None
        kind = header.pop("kind", None) if isinstance(header, dict) else None
        if kind not in KINDS:
            raise EnvelopeError(f"message kind {kind!r} is not one of {KINDS}")
        try:
            arrays = deserialize(data[4 + size :])
        except ValueError as err:
            raise EnvelopeError(str(err)) from None
        return cls(kind, header, arrays)

    @property
    def error(self) -> str:
        """The node's error message (``""`` unless ``kind == "error"``)."""
        return str(self.header.get("error", "")) if self.kind == "error" else ""


def error(message: str) -> Envelope:
    """An error reply carrying ``message``."""
    return Envelope("error", {"error": message})


def blob(data: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """``data`` as a uint8 array (how protocol blobs travel among the arrays)."""
    return np.frombuffer(data, np.uint8).copy()


# ------------------------------------------------------------ instructions
def task_envelope(ins: Instruction) -> Envelope:
    """The request that carries ``ins``."""
    return Envelope(
        "task",
        {
            "client_id": ins.client_id,
            "round": ins.round,
            "task": ins.task,
            "config": dict(ins.config),
            "shape": list(ins.shape) if ins.shape is not None else None,
        },
        ins.payload,
    )


def instruction(env: Envelope) -> Instruction:
    """Inverse of :func:`task_envelope`.

    Raises:
        EnvelopeError: a header field is missing or of the wrong type.
    """
    h = env.header
    try:
        task: Task = h["task"]
        if task not in ("fit", "probe", "class-stats", "calibrate"):
            raise EnvelopeError(f"unknown task {task!r}")
        shape = h.get("shape")
        return Instruction(
            int(h["client_id"]),
            int(h["round"]),
            task,
            _float32(
                {k: v for k, v in env.arrays.items() if not k.startswith(PROTOCOL)}
            ),
            {str(k): float(v) for k, v in dict(h.get("config", {})).items()},
            (int(shape[0]), int(shape[1])) if shape else None,
        )
    except (KeyError, TypeError, IndexError) as err:
        raise EnvelopeError(f"task message lacks or garbles {err}") from None


def update_envelope(update: ClientUpdate, sealed: bool) -> Envelope:
    """The reply carrying ``update``; ``sealed``: the arrays stay with the
    client (secure aggregation), only their names and shapes travel."""
    header = {
        "client_id": update.client_id,
        "num_examples": update.num_examples,
        "metrics": {k: float(v) for k, v in update.metrics.items()},
        "sealed": sealed,
    }
    if sealed:
        header["shapes"] = {k: list(v.shape) for k, v in update.delta.items()}
        return Envelope("reply", header)
    return Envelope("reply", header, update.delta)


def client_update(env: Envelope) -> ClientUpdate:
    """Inverse of :func:`update_envelope`. A sealed update comes back as zeros
    of the announced shapes: the server runs its merge code on them, and every
    value it needs arrives through secure sums
    (:mod:`fedpeft.remote.secure_sum`).

    Raises:
        EnvelopeError: a header field is missing or of the wrong type.
    """
    h = env.header
    try:
        delta = (
            {k: np.zeros(tuple(s), np.float32) for k, s in dict(h["shapes"]).items()}
            if h.get("sealed")
            else _float32(env.arrays)
        )
        metrics = {str(k): float(v) for k, v in dict(h.get("metrics", {})).items()}
        return ClientUpdate(int(h["client_id"]), delta, int(h["num_examples"]), metrics)
    except (KeyError, TypeError, ValueError) as err:
        raise EnvelopeError(f"reply lacks or garbles {err}") from None


def _float32(arrays: Arrays) -> Params:
    """Parameters as they travel: float32 arrays.

    Raises:
        EnvelopeError: an array of another dtype.
    """
    for name, value in arrays.items():
        if value.dtype != np.float32:
            raise EnvelopeError(f"array {name!r} is {value.dtype}, not float32")
    return dict(arrays)
