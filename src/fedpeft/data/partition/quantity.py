"""The ``quantity`` partition: power-law or log-normal client sizes, labels IID."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fedpeft.data.partition.base import (
    IntArray,
    PartitionConfig,
    PartitionInputs,
    register_partitioner,
)
from fedpeft.data.partition.stats import allocate_proportional
from fedpeft.types import Float64Array


class QuantityConfig(PartitionConfig):
    """Client sizes from a power law or a log-normal, labels IID within."""

    headline: ClassVar[tuple[str, ...]] = ("quantity_distribution",)
    method: Literal["quantity"] = "quantity"
    quantity_distribution: Literal["power-law", "log-normal"] = "power-law"
    quantity_exponent: float = Field(
        1.5,
        gt=0.0,
        description="Pareto shape of power-law sizes (smaller = heavier tail)",
    )
    quantity_sigma: float = Field(1.0, gt=0.0, description="sigma of log-normal sizes")


_SIZE_WEIGHTS: dict[
    str, Callable[[np.random.Generator, int, QuantityConfig], Float64Array]
] = {
    # Pareto type I with x_m = 1: density proportional to x^-(a+1).
    "power-law": lambda rng, k, spec: 1.0 + rng.pareto(spec.quantity_exponent, k),
    "log-normal": lambda rng, k, spec: rng.lognormal(0.0, spec.quantity_sigma, k),
}


@register_partitioner("quantity", QuantityConfig, "lower num_clients or min_size")
def _quantity(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: QuantityConfig,
    inputs: PartitionInputs,
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
