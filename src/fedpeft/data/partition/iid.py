"""The ``iid`` partition: a uniform random split into near-equal shards."""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedpeft.data.partition.base import (
    IntArray,
    PartitionConfig,
    PartitionInputs,
    register_partitioner,
)


class IidConfig(PartitionConfig):
    """IID shards: no options beyond the common ones."""

    method: Literal["iid"] = "iid"


@register_partitioner("iid", IidConfig, "lower num_clients or min_size")
def _iid(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: IidConfig,
    inputs: PartitionInputs,
) -> list[IntArray]:
    """Uniform random split into near-equal shards (sizes differ by at most 1)."""
    rng = np.random.default_rng(seed)
    shards = np.array_split(rng.permutation(len(labels)), num_clients)
    return [s.astype(np.int64) for s in shards]
