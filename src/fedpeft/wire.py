"""The serialized payload: what really crosses the wire, and its size.

Payloads are safetensors blobs of float32 arrays. Byte counts in the metrics are
``len()`` of these blobs, in both directions, never an estimate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from fedpeft.types import Params


def serialize(params: Mapping[str, np.ndarray]) -> bytes:
    """Encode named arrays as a safetensors blob (contiguous copies, keys sorted)."""
    return _st_save({k: np.ascontiguousarray(params[k]) for k in sorted(params)})


def deserialize(blob: bytes) -> Params:
    """Decode a blob from :func:`serialize`.

    Raises:
        ValueError: if the blob is truncated or not a safetensors payload.
    """
    try:
        return dict(_st_load(blob))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"corrupt payload ({len(blob)} bytes): {err}") from None


def payload_bytes(params: Mapping[str, np.ndarray]) -> int:
    """Exact size in bytes of ``serialize(params)``."""
    return len(serialize(params))
