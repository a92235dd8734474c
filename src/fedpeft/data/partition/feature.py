"""The ``feature`` partition: whole natural groups or k-means clusters per client."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.partition.base import (
    IntArray,
    PartitionError,
    PartitionSpec,
    _register,
    _split_by_owner,
)


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
