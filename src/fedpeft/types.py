"""The wire types and array aliases shared by every layer.

What travels between a client and the server is a :data:`Params` mapping of plain
numpy arrays plus small metadata. Strategies, privacy and secure aggregation only
ever see these types, never torch modules or transport records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Params = dict[str, FloatArray]
"""Named float32 arrays: an adapter's trainable state or an update to it."""

ParamsLike = Mapping[str, npt.NDArray[Any]]
"""Any mapping of names to arrays (read-only input form of :data:`Params`)."""

Float64Array = npt.NDArray[np.float64]
"""Float64 arrays: aggregation weights, flat parameter vectors, accumulators."""


@dataclass(frozen=True)
class ClientUpdate:
    """What one client returns after local training in one round.

    Attributes:
        client_id: Index of the client in the federation.
        delta: Local parameters minus the global parameters the client started from.
        num_examples: Number of training examples the client holds (n_k).
        metrics: Scalar client metrics, e.g. ``train_loss``, ``val_accuracy``.
    """

    client_id: int
    delta: Params
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


def check_params_like(
    reference: Mapping[str, np.ndarray],
    other: Mapping[str, np.ndarray],
    what: str = "update",
) -> None:
    """Raise ``ValueError`` unless ``other`` has exactly ``reference``'s keys and shapes
    and only finite values.

    Args:
        reference: The expected layout (usually the global parameters).
        other: The arrays to check (usually a client update).
        what: How to name ``other`` in the error message.
    """
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if missing or extra:
        raise ValueError(
            f"{what} has the wrong keys: missing {missing}, unexpected {extra}; "
            "it must carry exactly the adapter's trainable tensors"
        )
    for name, ref in reference.items():
        arr = other[name]
        if arr.shape != ref.shape:
            raise ValueError(
                f"{what} tensor {name!r} has shape {arr.shape}, expected {ref.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{what} tensor {name!r} contains NaN or infinite values; "
                "the client diverged (lower its learning rate) or is faulty"
            )


def params_nbytes(params: Mapping[str, np.ndarray]) -> int:
    """Number of bytes of the raw array data (no serialization overhead)."""
    return int(sum(a.nbytes for a in params.values()))
