"""Partition core: the method registry, :func:`partition_indices` and its checks.

:func:`partition_indices` validates its arguments, runs the named method from
:data:`PARTITIONERS` and then checks that the result is a disjoint cover of
``range(n)`` with every client holding at least ``min_size`` examples. Methods
live in their own modules and register here with :func:`_register`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.registry import Registry

# The package's name, not this module's: log records keep the logger name they
# had before the module became a package.
logger = logging.getLogger("fedpeft.data.partition")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class PartitionError(ValueError):
    """No partition meets the requested constraints; the message says what to change."""


@dataclass(frozen=True)
class PartitionSpec:
    """Method options, validated by :func:`partition_indices`.

    Attributes:
        min_size: Fewest examples any client may hold (>= 1).
        alpha: Dirichlet concentration (> 0); smaller means more label skew.
        classes_per_client: Classes per client for ``pathological``.
        quantity_distribution: ``"power-law"`` or ``"log-normal"`` client sizes.
        quantity_exponent: Pareto shape ``a`` for power-law sizes (> 0); smaller
            means a heavier tail, i.e. more unequal clients.
        quantity_sigma: Log-normal sigma for log-normal sizes (> 0).
        groups: Per-example natural-id column for ``feature`` (shape ``(n,)``).
        features: Per-example embeddings for ``feature`` (shape ``(n, d)``).
        num_clusters: k-means clusters for ``feature`` (default: ``num_clients``).
    """

    min_size: int = 10
    alpha: float = 0.5
    classes_per_client: int = 2
    quantity_distribution: str = "power-law"
    quantity_exponent: float = 1.5
    quantity_sigma: float = 1.0
    groups: npt.NDArray[Any] | None = None
    features: npt.NDArray[Any] | None = None
    num_clusters: int | None = None


PartitionFn = Callable[[IntArray, int, int, PartitionSpec], list[IntArray]]
"""``(labels, num_clients, seed, spec) -> one index array per client``."""


@dataclass(frozen=True)
class Partitioner:
    """A registered partition method.

    Attributes:
        split: The partition function.
        fix_hint: What to change when a client ends up below ``min_size``.
    """

    split: PartitionFn
    fix_hint: str


PARTITIONERS: Registry[Partitioner] = Registry("partitioner")

QUANTITY_DISTRIBUTIONS = ("power-law", "log-normal")


def _register(name: str, fix_hint: str) -> Callable[[PartitionFn], PartitionFn]:
    """Register a partition function under ``name`` with its docstring as help."""

    def decorator(fn: PartitionFn) -> PartitionFn:
        summary = (fn.__doc__ or "").strip().splitlines()
        PARTITIONERS.add(name, Partitioner(fn, fix_hint), summary[0] if summary else "")
        return fn

    return decorator


def partition_indices(
    labels: npt.NDArray[Any],
    num_clients: int,
    method: str,
    *,
    seed: int,
    min_size: int = 10,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    quantity_distribution: str = "power-law",
    quantity_exponent: float = 1.5,
    quantity_sigma: float = 1.0,
    groups: npt.NDArray[Any] | None = None,
    features: npt.NDArray[Any] | None = None,
    num_clusters: int | None = None,
) -> list[IntArray]:
    """Split examples across ``num_clients`` clients with the named method.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        num_clients: Number of clients (>= 1).
        method: A name registered in :data:`PARTITIONERS`.
        seed: Non-negative seed; the same seed gives the same partition.
        min_size: Fewest examples any client may hold (>= 1).
        alpha: Dirichlet concentration for ``dirichlet`` (> 0).
        classes_per_client: Classes per client for ``pathological`` (>= 1).
        quantity_distribution: ``"power-law"`` or ``"log-normal"`` for ``quantity``.
        quantity_exponent: Pareto shape of power-law client sizes (> 0).
        quantity_sigma: Sigma of log-normal client sizes (> 0).
        groups: Natural-id column (shape ``(n,)``) for ``feature``.
        features: Embeddings (shape ``(n, d)``) for ``feature`` when no groups.
        num_clusters: k-means clusters for ``feature`` (default ``num_clients``).

    Returns:
        ``num_clients`` int64 index arrays into ``labels``, a disjoint cover of
        ``range(n)``, each of length >= ``min_size``.

    Raises:
        KeyError: ``method`` is not registered (the message lists the choices).
        ValueError: An argument is out of range (the message names it).
        PartitionError: The constraints cannot be met (the message says what to
            change, e.g. fewer clients, a larger alpha or a smaller min_size).
    """
    partitioner = PARTITIONERS.get(method)
    y = _check_labels(labels)
    spec = PartitionSpec(
        min_size=min_size,
        alpha=alpha,
        classes_per_client=classes_per_client,
        quantity_distribution=quantity_distribution,
        quantity_exponent=quantity_exponent,
        quantity_sigma=quantity_sigma,
        groups=groups,
        features=features,
        num_clusters=num_clusters,
    )
    _check_arguments(len(y), num_clients, seed, spec)
    _check_feasible(len(y), num_clients, min_size)
    parts = partitioner.split(y, num_clients, seed, spec)
    _check_cover(parts, len(y), num_clients, method)
    _check_min_size(parts, min_size, method, partitioner.fix_hint)
    sizes = [len(p) for p in parts]
    logger.info(
        "%s partition of %d examples over %d clients: sizes %d..%d",
        method,
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


def _check_arguments(n: int, num_clients: int, seed: int, spec: PartitionSpec) -> None:
    _check_int("num_clients", num_clients, 1)
    _check_int("seed", seed, 0)
    _check_int("min_size", spec.min_size, 1)
    _check_int("classes_per_client", spec.classes_per_client, 1)
    _check_positive("alpha", spec.alpha)
    _check_positive("quantity_exponent", spec.quantity_exponent)
    _check_positive("quantity_sigma", spec.quantity_sigma)
    if spec.quantity_distribution not in QUANTITY_DISTRIBUTIONS:
        raise ValueError(
            f"quantity_distribution={spec.quantity_distribution!r} is not one of "
            f"{', '.join(QUANTITY_DISTRIBUTIONS)}"
        )
    if spec.num_clusters is not None:
        _check_int("num_clusters", spec.num_clusters, 1)
        if spec.num_clusters > n:
            raise ValueError(
                f"num_clusters={spec.num_clusters} exceeds the {n} examples; "
                f"allowed range is 1..{n}"
            )
    _check_columns(n, spec)


def _check_int(name: str, value: object, lowest: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < lowest
    ):
        raise ValueError(f"{name}={value!r} must be an integer >= {lowest}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and 0 < value < math.inf):
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def _check_columns(n: int, spec: PartitionSpec) -> None:
    if spec.groups is not None and np.shape(spec.groups) != (n,):
        raise ValueError(
            f"groups has shape {np.shape(spec.groups)}; it needs one value per "
            f"example, shape ({n},)"
        )
    if spec.features is not None:
        shape = np.shape(spec.features)
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(
                f"features has shape {shape}; it needs one row per example, "
                f"shape ({n}, d)"
            )


def _check_feasible(n: int, num_clients: int, min_size: int) -> None:
    if num_clients * min_size > n:
        fixes = [f"num_clients <= {n // min_size}"]
        if n >= num_clients:
            fixes.append(f"min_size <= {n // num_clients}")
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
