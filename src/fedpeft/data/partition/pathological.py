"""The ``pathological`` partition: each client holds exactly k classes.

After McMahan et al. 2017, sec. 3, and Li et al. 2022, arXiv:2102.02079.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fedpeft.data.partition.base import (
    IntArray,
    PartitionConfig,
    PartitionError,
    PartitionInputs,
    _split_by_owner,
    register_partitioner,
)


class PathologicalConfig(PartitionConfig):
    """Each client holds exactly ``classes_per_client`` classes."""

    headline: ClassVar[tuple[str, ...]] = ("classes_per_client",)
    method: Literal["pathological"] = "pathological"
    classes_per_client: int = Field(2, ge=1, description="classes per client")


@register_partitioner(
    "pathological",
    PathologicalConfig,
    "raise classes_per_client, lower num_clients or lower min_size",
)
def _pathological(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: PathologicalConfig,
    inputs: PartitionInputs,
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
