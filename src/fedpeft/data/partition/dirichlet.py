"""Dirichlet label skew: ``dirichlet`` and ``dirichlet-balanced``.

Both wrap flwr-datasets partitioners. ``dirichlet`` splits each class across
clients in proportions drawn from Dir(alpha) (Hsu et al. 2019, arXiv:1909.06335;
Yurochkin et al. 2019); ``dirichlet-balanced`` fixes equal client sizes and draws
each client's class mix from Dir(alpha) (after Acar et al. 2021, FedDyn).
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fedpeft.data.partition.base import (
    IntArray,
    PartitionConfig,
    PartitionError,
    PartitionInputs,
    register_partitioner,
)


class DirichletConfig(PartitionConfig):
    """Label skew by Dir(alpha) proportions per class."""

    headline: ClassVar[tuple[str, ...]] = ("alpha",)
    method: Literal["dirichlet"] = "dirichlet"
    alpha: float = Field(
        0.5, gt=0.0, description="Dirichlet concentration (smaller = more skew)"
    )


class DirichletBalancedConfig(PartitionConfig):
    """Label skew at equal client sizes, each client's mix ~ Dir(alpha)."""

    headline: ClassVar[tuple[str, ...]] = ("alpha",)
    method: Literal["dirichlet-balanced"] = "dirichlet-balanced"
    alpha: float = Field(
        0.5, gt=0.0, description="Dirichlet concentration (smaller = more skew)"
    )


@register_partitioner(
    "dirichlet",
    DirichletConfig,
    "use fewer clients, a larger alpha or a smaller min_size",
)
def _dirichlet(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: DirichletConfig,
    inputs: PartitionInputs,
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


@register_partitioner(
    "dirichlet-balanced", DirichletBalancedConfig, "use fewer clients"
)
def _dirichlet_balanced(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: DirichletBalancedConfig,
    inputs: PartitionInputs,
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
