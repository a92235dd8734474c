"""Conversion between fedpeft's envelopes and Flower's records (the one place).

An envelope's header travels as a JSON string in a ``ConfigRecord`` and its
arrays as an ``ArrayRecord`` (names and dtypes kept).
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedpeft.remote.envelope import KINDS, Envelope, EnvelopeError

HEADER = "fedpeft"
ARRAYS = "arrays"


def to_record(env: Envelope) -> RecordDict:
    """``env`` as Flower message content."""
    head = json.dumps({"kind": env.kind, **env.header})
    arrays = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in env.arrays.items()}
    )
    return RecordDict({HEADER: ConfigRecord({"header": head}), ARRAYS: arrays})


def from_record(content: RecordDict) -> Envelope:
    """Inverse of :func:`to_record`.

    Raises:
        EnvelopeError: content that is not a fedpeft message.
    """
    try:
        header = json.loads(str(content.config_records[HEADER]["header"]))
        arrays = {k: a.numpy() for k, a in content.array_records[ARRAYS].items()}
    except (KeyError, ValueError, TypeError) as err:
        raise EnvelopeError(f"not a fedpeft message ({err})") from None
    kind = header.pop("kind", None)
    if kind not in KINDS:
        raise EnvelopeError(f"message kind {kind!r} is not one of {KINDS}")
    return Envelope(kind, header, arrays)
