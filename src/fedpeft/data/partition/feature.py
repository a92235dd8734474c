"""The ``feature`` partition: whole natural groups or k-means clusters per client."""

from __future__ import annotations

import heapq
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from fedpeft.data.partition.base import (
    IntArray,
    PartitionConfig,
    PartitionError,
    PartitionInputs,
    _split_by_owner,
    register_partitioner,
)


class FeatureConfig(PartitionConfig):
    """Whole natural groups, or k-means clusters of embeddings, per client."""

    headline: ClassVar[tuple[str, ...]] = ("group_column",)
    method: Literal["feature"] = "feature"
    group_column: str | None = Field(
        None,
        description="metadata column of natural groups (unset: k-means clusters "
        "of the backbone's embeddings)",
    )
    num_clusters: int | None = Field(
        None, ge=2, description="k-means clusters (unset: num_clients)"
    )


@register_partitioner(
    "feature",
    FeatureConfig,
    "use more (smaller) groups or clusters (num_clusters > num_clients), "
    "fewer clients or a smaller min_size",
)
def _feature(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: FeatureConfig,
    inputs: PartitionInputs,
) -> list[IntArray]:
    """Feature skew: whole groups (natural ids) or k-means clusters per client.

    Groups come from the metadata column ``group_column`` when set, else from
    k-means clusters of the inputs' embeddings. Groups go to clients greedily,
    largest first, each to the client with the fewest examples so far (ties
    between equal-sized groups broken by a seeded shuffle, between clients by
    the lower id).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    if spec.group_column is not None:
        groups = _group_column(inputs, spec.group_column, n)
        group_ids = np.unique(groups, return_inverse=True)[1]
    elif inputs.features is not None:
        k = spec.num_clusters or num_clients
        if k > n:
            raise PartitionError(
                f"partition.num_clusters={k} exceeds the {n} examples; use at "
                f"most {n} clusters"
            )
        group_ids = _kmeans_clusters(_embeddings(inputs.features(), n), k, seed)
    else:
        raise PartitionError(
            "feature partition needs partition.group_column (a per-example "
            "metadata column, e.g. movie_name) or embeddings (inputs.features)"
        )
    owner = _assign_groups(group_ids.astype(np.int64).ravel(), num_clients, rng)
    return _split_by_owner(owner, num_clients, rng)


def _group_column(inputs: PartitionInputs, column: str, n: int) -> npt.NDArray[Any]:
    if column not in inputs.metadata:
        raise PartitionError(
            f"partition.group_column = {column!r} is not a metadata column of "
            f"the data; its columns: {sorted(inputs.metadata) or '(none)'}"
        )
    groups = np.asarray(inputs.metadata[column])
    if groups.shape != (n,):
        raise ValueError(
            f"metadata column {column!r} has shape {groups.shape}; it needs one "
            f"value per example, shape ({n},)"
        )
    return groups


def _embeddings(features: npt.NDArray[Any], n: int) -> npt.NDArray[Any]:
    shape = np.shape(features)
    if len(shape) != 2 or shape[0] != n:
        raise ValueError(
            f"features has shape {shape}; it needs one row per example, shape ({n}, d)"
        )
    return np.asarray(features)


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
