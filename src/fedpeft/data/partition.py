"""Split a labelled dataset across federated clients: pure math over label arrays.

Every partitioner maps a label array of length ``n`` to one int64 index array per
client. The arrays are a disjoint cover of ``range(n)``: every example goes to
exactly one client, and no partitioner drops examples (a configuration that
would force a drop raises :class:`PartitionError` instead). Every draw comes
from a ``numpy.random.Generator`` seeded with ``seed``, so the same labels, options
and seed give the same partition. The order of indices inside a client is a
seeded shuffle, never grouped by class.

Methods (choose by name from :data:`PARTITIONERS`):

* ``iid``: a uniform random split into near-equal shards.
* ``dirichlet``: label skew; each class is split across clients in proportions
  drawn from Dir(alpha) (Hsu et al. 2019, arXiv:1909.06335; Yurochkin et al. 2019),
  via flwr-datasets' ``DirichletPartitioner``.
* ``quantity``: quantity skew; client sizes drawn from a power law or a
  log-normal, labels IID inside each client.
* ``feature``: feature skew; whole natural groups (e.g. one movie's reviews) or
  k-means clusters of embeddings go to one client each.
* ``pathological``: each client holds exactly ``classes_per_client`` classes
  (McMahan et al. 2017, sec. 3; Li et al. 2022, arXiv:2102.02079).
"""

from __future__ import annotations

import heapq
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.registry import Registry

logger = logging.getLogger(__name__)

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


# --- shared math ------------------------------------------------------------------


def allocate_proportional(total: int, weights: npt.ArrayLike) -> IntArray:
    """Split the integer ``total`` into parts proportional to ``weights``.

    Uses the largest-remainder (Hamilton) method: each part gets the floor of its
    exact share, and the leftover units go to the largest fractional remainders
    (ties to the lower index). The parts sum exactly to ``total`` and each is
    within 1 of its exact share ``total * w_i / sum(w)``.

    Args:
        total: Non-negative integer to split.
        weights: Non-negative weights, shape ``(k,)``, not all zero.

    Returns:
        int64 parts, shape ``(k,)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(
            f"need total >= 0 and non-negative 1-D weights with a positive sum, "
            f"got total={total}, weights={w}"
        )
    exact = total * w / w.sum()
    parts: IntArray = np.floor(exact).astype(np.int64)
    leftover = total - int(parts.sum())
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[:leftover]] += 1
    return parts


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


# --- methods ----------------------------------------------------------------------


@_register("iid", "lower num_clients or min_size")
def _iid(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Uniform random split into near-equal shards (sizes differ by at most 1)."""
    rng = np.random.default_rng(seed)
    shards = np.array_split(rng.permutation(len(labels)), num_clients)
    return [s.astype(np.int64) for s in shards]


@_register("dirichlet", "use fewer clients, a larger alpha or a smaller min_size")
def _dirichlet(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Label skew: each class split across clients by Dir(alpha) proportions."""
    # Imported here: datasets + flwr-datasets take seconds to import.
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=float(spec.alpha),
        min_partition_size=spec.min_size,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = Dataset.from_dict(
        {"label": labels, "idx": np.arange(len(labels), dtype=np.int64)}
    )
    with warnings.catch_warnings():
        # flwr warns on every resampling; a final failure is raised below.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return [
                np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
                for i in range(num_clients)
            ]
        except ValueError as err:
            raise PartitionError(
                f"dirichlet partition (alpha={spec.alpha}) could not give all "
                f"{num_clients} clients at least min_size={spec.min_size} examples "
                f"of {len(labels)} in 11 draws; use fewer clients, a larger alpha "
                f"or a smaller min_size (flwr-datasets: {err})"
            ) from err


@_register("dirichlet-balanced", "use fewer clients")
def _dirichlet_balanced(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Label skew at equal client sizes: each client's class mix ~ Dir(alpha).

    Every client gets n/num_clients examples (sizes differ by at most 1); its label
    proportions are drawn from a symmetric Dirichlet(alpha), with exhausted classes
    renormalised away (flwr-datasets' InnerDirichletPartitioner, after Acar et al.
    2021, FedDyn). Unlike ``dirichlet`` it cannot starve a client, so strong skew
    (alpha = 0.1) works even with two classes and many clients.
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import InnerDirichletPartitioner

    sizes = [len(s) for s in np.array_split(np.arange(len(labels)), num_clients)]
    partitioner = InnerDirichletPartitioner(
        partition_sizes=sizes,
        partition_by="label",
        alpha=float(spec.alpha),
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = Dataset.from_dict(
        {"label": labels, "idx": np.arange(len(labels), dtype=np.int64)}
    )
    return [
        np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
        for i in range(num_clients)
    ]


_SIZE_WEIGHTS: dict[
    str, Callable[[np.random.Generator, int, PartitionSpec], FloatArray]
] = {
    # Pareto type I with x_m = 1: density proportional to x^-(a+1).
    "power-law": lambda rng, k, spec: 1.0 + rng.pareto(spec.quantity_exponent, k),
    "log-normal": lambda rng, k, spec: rng.lognormal(0.0, spec.quantity_sigma, k),
}


@_register("quantity", "lower num_clients or min_size")
def _quantity(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Quantity skew: power-law or log-normal client sizes, labels IID within.

    Every client first gets ``min_size`` examples; the rest are shared in
    proportion to weights drawn from the chosen distribution. Written by hand:
    flwr's SizePartitioner needs the sizes up front, which is all this computes.
    """
    rng = np.random.default_rng(seed)
    weights = _SIZE_WEIGHTS[spec.quantity_distribution](rng, num_clients, spec)
    spare = len(labels) - num_clients * spec.min_size
    sizes = spec.min_size + allocate_proportional(spare, weights)
    shards = np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1])
    return [s.astype(np.int64) for s in shards]


@_register(
    "feature",
    "use more (smaller) groups or clusters (num_clusters > num_clients), "
    "fewer clients or a smaller min_size",
)
def _feature(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Feature skew: whole groups (natural ids) or k-means clusters per client.

    Groups come from ``groups`` when given, else from k-means clusters of
    ``features``. Groups go to clients greedily, largest first, each to the
    client with the fewest examples so far (ties between equal-sized groups
    broken by a seeded shuffle, between clients by the lower id).
    """
    rng = np.random.default_rng(seed)
    if spec.groups is not None:
        group_ids = np.unique(np.asarray(spec.groups), return_inverse=True)[1]
    elif spec.features is not None:
        k = spec.num_clusters or num_clients
        group_ids = _kmeans_clusters(np.asarray(spec.features), k, seed)
    else:
        raise PartitionError(
            "feature partition needs groups= (a per-example metadata column, e.g. "
            "movie_name) or features= (an (n, d) embedding array)"
        )
    owner = _assign_groups(group_ids.astype(np.int64).ravel(), num_clients, rng)
    return _split_by_owner(owner, num_clients, rng)


def _kmeans_clusters(features: npt.NDArray[Any], k: int, seed: int) -> IntArray:
    from sklearn.cluster import KMeans

    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinite values")
    model = KMeans(n_clusters=k, n_init="auto", random_state=seed % 2**32)
    return np.asarray(model.fit_predict(features), dtype=np.int64)


def _assign_groups(
    group_ids: IntArray, num_clients: int, rng: np.random.Generator
) -> IntArray:
    """Longest-processing-time greedy: return the client of every example."""
    sizes = np.bincount(group_ids)
    present = np.flatnonzero(sizes)
    if len(present) < num_clients:
        raise PartitionError(
            f"feature partition: only {len(present)} groups/clusters for "
            f"{num_clients} clients; every client needs at least one. Use fewer "
            "clients, a finer grouping or num_clusters >= num_clients"
        )
    order = present[np.lexsort((rng.random(len(present)), -sizes[present]))]
    loads = [(0, client) for client in range(num_clients)]
    group_owner = np.zeros(len(sizes), dtype=np.int64)
    for g in order:
        load, client = heapq.heappop(loads)
        group_owner[g] = client
        heapq.heappush(loads, (load + int(sizes[g]), client))
    return group_owner[group_ids]


@_register(
    "pathological",
    "raise classes_per_client, lower num_clients or lower min_size",
)
def _pathological(
    labels: IntArray, num_clients: int, seed: int, spec: PartitionSpec
) -> list[IntArray]:
    """Pathological label skew: each client holds exactly k classes.

    Client by client, each takes the k classes held by the fewest clients so far
    (ties broken at random), so every class is held by floor or ceil of
    (clients*k/classes) clients; each class's examples are split evenly among
    its holders. Written by hand instead of flwr's PathologicalPartitioner: its
    modes leave classes unused (their examples dropped) whenever there are fewer
    clients than classes.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    k = spec.classes_per_client
    _check_pathological(len(classes), num_clients, k)
    holders = _least_used_classes(len(classes), num_clients, k, rng)  # (clients, k)
    owner = np.empty(len(labels), dtype=np.int64)
    for position, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        clients = np.flatnonzero((holders == position).any(axis=1))
        for client, piece in zip(
            clients, np.array_split(members, len(clients)), strict=True
        ):
            owner[piece] = client
    return _split_by_owner(owner, num_clients, rng)


def _least_used_classes(
    num_classes: int, num_clients: int, k: int, rng: np.random.Generator
) -> IntArray:
    usage = np.zeros(num_classes, dtype=np.int64)
    holders = np.empty((num_clients, k), dtype=np.int64)
    for client in range(num_clients):
        chosen = np.lexsort((rng.random(num_classes), usage))[:k]
        holders[client] = chosen
        usage[chosen] += 1
    return holders


def _check_pathological(num_classes: int, num_clients: int, k: int) -> None:
    if k > num_classes:
        raise PartitionError(
            f"classes_per_client={k} but the labels hold only {num_classes} "
            f"classes; use classes_per_client <= {num_classes}"
        )
    if num_clients * k < num_classes:
        raise PartitionError(
            f"{num_clients} clients x {k} classes cover only {num_clients * k} of "
            f"{num_classes} classes, so examples would be dropped; use "
            f"classes_per_client >= {math.ceil(num_classes / num_clients)} or more "
            "clients"
        )


# --- per-client splits and statistics --------------------------------------------


def split_train_val(
    indices: npt.NDArray[Any], val_fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Shuffle one client's shard and split off a validation part.

    The validation part has ``round(val_fraction * n)`` examples, at least 1 when
    ``val_fraction > 0`` and ``n >= 2``, and always leaves at least 1 training
    example; it is empty when ``val_fraction == 0``.

    Args:
        indices: The client's example indices, shape ``(n,)``, ``n >= 1``.
        val_fraction: Fraction for validation, in ``[0, 1)``.
        rng: Generator for the shuffle (derive it from the run seed and client).

    Returns:
        ``(train, val)`` int64 index arrays, disjoint, together ``indices``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0:
        raise ValueError(
            f"indices must be a non-empty 1-D array, got shape {idx.shape}"
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0, 1)")
    n = len(idx)
    n_val = round(val_fraction * n)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    shuffled = rng.permutation(idx)
    return shuffled[n_val:], shuffled[:n_val]


def label_distribution(
    labels: npt.NDArray[Any], parts: Sequence[npt.NDArray[Any]], num_classes: int
) -> IntArray:
    """Count each class in each client's part.

    Returns:
        int64 counts, shape ``(clients, num_classes)``.
    """
    y = np.asarray(labels, dtype=np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}"
        )
    rows = [
        np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes)
        for p in parts
    ]
    return np.array(rows, dtype=np.int64).reshape(len(parts), num_classes)


def label_skew(
    labels: npt.NDArray[Any], parts: Sequence[npt.NDArray[Any]], num_classes: int
) -> float:
    """Mean total-variation distance between client and global label mixes.

    ``mean_k 0.5 * sum_c |p_k(c) - p(c)|`` over the non-empty clients k, where
    ``p_k`` is client k's class distribution and ``p`` the pooled one. 0 means
    every client sees the global mix; values near 1 mean clients hold classes
    that are rare overall.
    """
    counts = label_distribution(labels, parts, num_classes).astype(np.float64)
    sizes = counts.sum(axis=1)
    counts = counts[sizes > 0]
    if len(counts) == 0:
        raise ValueError("all parts are empty")
    client_mix = counts / counts.sum(axis=1, keepdims=True)  # (clients, classes)
    global_mix = counts.sum(axis=0) / counts.sum()  # (classes,)
    return float(np.mean(0.5 * np.abs(client_mix - global_mix).sum(axis=1)))
