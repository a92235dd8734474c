"""Partition core: :func:`partition_indices`, its checks and the registration of
partitioners.

:func:`partition_indices` validates the options into the partitioner's own
options class (from :data:`~.config.PARTITIONERS`), runs it and then checks
that the result is a disjoint cover of ``range(n)`` with every client holding
at least ``min_size`` examples. Partitioners live in their own modules with
their options class and register with :func:`register_partitioner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from fedpeft.data.partition.config import (
    PARTITIONERS,
    PartitionConfig,
    partition_config,
)

# The package's name, not this module's: log records keep the logger name they
# had before the module became a package.
logger = logging.getLogger("fedpeft.data.partition")

IntArray = npt.NDArray[np.int64]
C = TypeVar("C", bound=PartitionConfig)

__all__ = ["PARTITIONERS", "PartitionConfig"]


class PartitionError(ValueError):
    """No partition meets the requested constraints; the message says what to change."""


@dataclass(frozen=True)
class PartitionInputs:
    """Per-example data beyond the labels, for partitioners that group by it.

    Attributes:
        metadata: Per-example columns by name (e.g. a corpus's
            ``movie_name``), each of length n.
        features: Computes ``(n, d)`` embeddings; only a partitioner that
            needs them calls it (it may run the backbone).
    """

    metadata: Mapping[str, npt.ArrayLike] = field(default_factory=dict)
    features: Callable[[], npt.NDArray[Any]] | None = None


PartitionFn = Callable[[IntArray, int, int, C, PartitionInputs], list[IntArray]]
"""``(labels, num_clients, seed, options, inputs) -> one index array per client``."""


@dataclass(frozen=True)
class Partitioner(Generic[C]):
    """A registered partition method.

    Attributes:
        split: The partition function.
        fix_hint: What to change when a client ends up below ``min_size``.
    """

    split: PartitionFn[C]
    fix_hint: str


def register_partitioner(
    name: str, options: type[C], fix_hint: str
) -> Callable[[PartitionFn[C]], PartitionFn[C]]:
    """Register a partition function and its options class under ``name``,
    with the function's docstring as help."""

    def decorator(fn: PartitionFn[C]) -> PartitionFn[C]:
        summary = (fn.__doc__ or "").strip().splitlines()
        PARTITIONERS.add_component(
            name, options, Partitioner(fn, fix_hint), summary[0] if summary else ""
        )
        return fn

    return decorator


def partition_indices(
    labels: npt.NDArray[Any],
    num_clients: int,
    method: str | PartitionConfig,
    *,
    seed: int,
    inputs: PartitionInputs | None = None,
    **options: Any,
) -> list[IntArray]:
    """Split examples across ``num_clients`` clients with the named method.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        num_clients: Number of clients (>= 1).
        method: A partitioner's options, or its name in :data:`PARTITIONERS`
            (then ``options`` are validated into its options class).
        seed: Non-negative seed; the same seed gives the same partition.
        inputs: Metadata columns or embeddings (the ``feature`` method).
        **options: Options that replace ``method``'s (e.g. ``min_size``,
            ``alpha``), validated.

    Returns:
        ``num_clients`` int64 index arrays into ``labels``, a disjoint cover of
        ``range(n)``, each of length >= ``min_size``.

    Raises:
        ConfigError: An unknown method, or an option that is out of range or
            not one of the method's (the message lists its options).
        ValueError: ``labels``, ``num_clients`` or ``seed`` is out of range.
        PartitionError: The constraints cannot be met (the message says what to
            change, e.g. fewer clients, a larger alpha or a smaller min_size).
    """
    if isinstance(method, str):
        config = partition_config(method, **options)
    else:
        config = method.replace(**options) if options else method
    partitioner = PARTITIONERS.factory(config.method)
    y = _check_labels(labels)
    _check_int("num_clients", num_clients, 1)
    _check_int("seed", seed, 0)
    _check_feasible(len(y), num_clients, config.min_size)
    parts = partitioner.split(y, num_clients, seed, config, inputs or PartitionInputs())
    _check_cover(parts, len(y), num_clients, config.method)
    _check_min_size(parts, config.min_size, config.method, partitioner.fix_hint)
    sizes = [len(p) for p in parts]
    logger.info(
        "%s partition of %d examples over %d clients: sizes %d..%d",
        config.method,
        len(y),
        num_clients,
        min(sizes),
        max(sizes),
    )
    return parts


# --- validation -------------------------------------------------------------------


def _check_labels(labels: npt.NDArray[Any]) -> IntArray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("labels is empty; there is nothing to partition")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers (class ids), got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {y.min()}")
    return y.astype(np.int64, copy=False)


def _check_int(name: str, value: object, lowest: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < lowest
    ):
        raise ValueError(f"{name}={value!r} must be an integer >= {lowest}")


def _check_feasible(n: int, num_clients: int, min_size: int) -> None:
    if num_clients * min_size > n:
        fixes = [f"num_clients <= {n // min_size}"] if n >= min_size else []
        if n >= num_clients:
            fixes.append(f"min_size <= {n // num_clients}")
        fixes.append(
            f"at least {num_clients * min_size} training examples (a larger "
            "data.max_train, if the corpus has them)"
        )
        raise PartitionError(
            f"cannot give {num_clients} clients at least min_size={min_size} "
            f"examples each from {n} examples; use {' or '.join(fixes)}"
        )


def _check_cover(
    parts: Sequence[IntArray], n: int, num_clients: int, method: str
) -> None:
    # An internal invariant, checked always (it is cheap): a bug here would
    # silently duplicate or lose training data.
    flat = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    if len(parts) != num_clients or not np.array_equal(flat, np.arange(n)):
        raise RuntimeError(
            f"partitioner {method!r} did not return a disjoint cover of "
            f"range({n}) in {num_clients} parts (bug)"
        )


def _check_min_size(
    parts: Sequence[IntArray], min_size: int, method: str, fix_hint: str
) -> None:
    sizes = np.array([len(p) for p in parts])
    smallest = int(sizes.argmin())
    if sizes[smallest] < min_size:
        raise PartitionError(
            f"{method} partition: client {smallest} got {sizes[smallest]} examples, "
            f"fewer than min_size={min_size}; {fix_hint}"
        )


# --- building the cover -----------------------------------------------------------


def _shuffle_each(
    parts: Sequence[npt.NDArray[Any]], rng: np.random.Generator
) -> list[IntArray]:
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def _split_by_owner(
    owner: IntArray, num_clients: int, rng: np.random.Generator
) -> list[IntArray]:
    """Turn a per-example client id into one shuffled index array per client."""
    order = np.argsort(owner, kind="stable")
    bounds = np.cumsum(np.bincount(owner, minlength=num_clients))[:-1]
    return _shuffle_each(np.split(order, bounds), rng)
