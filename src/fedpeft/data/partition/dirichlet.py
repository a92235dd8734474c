"""Dirichlet label skew: ``dirichlet`` and ``dirichlet-balanced``.

``dirichlet`` splits each class across clients in proportions drawn from
Dir(alpha) (Yurochkin et al. 2019; Li et al. 2022, arXiv:2102.02079,
"distribution-based label imbalance"; the usual reading of Hsu et al. 2019,
arXiv:1909.06335, who draw each client's class mix instead). Written here so
that it can redraw up to ``max_draws`` times and, when no draw gives every
client ``min_size`` examples, say why with numbers.
``dirichlet-balanced`` fixes equal client sizes and draws each client's class
mix from Dir(alpha) (after Acar et al. 2021, FedDyn), via flwr-datasets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

logger = logging.getLogger("fedpeft.data.partition")

_FIX = (
    "use fewer clients, a larger alpha or a smaller min_size, or method "
    "dirichlet-balanced (it fixes every client's size at n/num_clients)"
)


class DirichletConfig(PartitionConfig):
    """Label skew by Dir(alpha) proportions per class."""

    headline: ClassVar[tuple[str, ...]] = ("alpha",)
    method: Literal["dirichlet"] = "dirichlet"
    alpha: float = Field(
        0.5, gt=0.0, description="Dirichlet concentration (smaller = more skew)"
    )
    max_draws: int = Field(
        100,
        ge=1,
        description="proportion draws to try before giving up when a client "
        "gets fewer than min_size examples",
    )


class DirichletBalancedConfig(PartitionConfig):
    """Label skew at equal client sizes, each client's mix ~ Dir(alpha)."""

    headline: ClassVar[tuple[str, ...]] = ("alpha",)
    method: Literal["dirichlet-balanced"] = "dirichlet-balanced"
    alpha: float = Field(
        0.5, gt=0.0, description="Dirichlet concentration (smaller = more skew)"
    )


@register_partitioner("dirichlet", DirichletConfig, _FIX)
def _dirichlet(
    labels: IntArray,
    num_clients: int,
    seed: int,
    spec: DirichletConfig,
    inputs: PartitionInputs,
) -> list[IntArray]:
    """Label skew: each class split across clients by Dir(alpha) proportions.

    As in Li et al. 2022 (arXiv:2102.02079): for every class c, client
    shares q_c ~ Dir(alpha * 1_K) over the K clients; the class's examples are
    shuffled and cut at floor(n_c * cumsum(q_c)). A client may hold none of a
    class (with small alpha most do). The whole draw is repeated, up to
    ``spec.max_draws`` times, until every client holds at least
    ``spec.min_size`` examples; every draw comes from one generator seeded with
    ``seed``, so the result is deterministic.

    Raises:
        PartitionError: No draw gave every client ``min_size`` examples; the
            message gives the best draw's smallest client, the share of clients
            that fell short and what to change.
    """
    rng = np.random.default_rng(seed)
    classes, class_sizes = np.unique(labels, return_counts=True)
    tally = _DrawTally(spec.min_size)
    for draw in range(1, spec.max_draws + 1):
        counts = _draw_counts(class_sizes, num_clients, spec.alpha, rng)
        sizes = counts.sum(axis=0)  # (clients,)
        if sizes.min() >= spec.min_size:
            logger.debug(
                "dirichlet partition: draw %d of at most %d fit", draw, spec.max_draws
            )
            return _deal(labels, classes, counts, rng)
        tally.add(sizes)
    raise PartitionError(_failure_message(spec, num_clients, class_sizes, tally))


def _draw_counts(
    class_sizes: IntArray, num_clients: int, alpha: float, rng: np.random.Generator
) -> IntArray:
    """Examples of each class per client, shape ``(classes, clients)``: each
    row is its class size cut by Dir(alpha) shares."""
    shares = rng.dirichlet(np.full(num_clients, alpha), size=len(class_sizes))
    n = class_sizes[:, None]  # (classes, 1)
    bounds = np.minimum(np.floor(np.cumsum(shares, axis=1) * n).astype(np.int64), n)
    bounds[:, -1] = class_sizes  # float rounding must not lose the last examples
    return np.diff(bounds, axis=1, prepend=0)


def _deal(
    labels: IntArray, classes: IntArray, counts: IntArray, rng: np.random.Generator
) -> list[IntArray]:
    """Hand each class's shuffled examples to clients by ``counts``."""
    owner = np.empty(len(labels), dtype=np.int64)
    clients = np.arange(counts.shape[1])
    for cls, row in zip(classes, counts, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        owner[members] = np.repeat(clients, row)
    return _split_by_owner(owner, counts.shape[1], rng)


@dataclass
class _DrawTally:
    """Running statistics of failed draws, for the error message."""

    min_size: int
    draws: int = 0
    best_smallest: int = -1
    short_clients: int = 0
    client_draws: int = 0
    median_total: float = 0.0

    def add(self, sizes: IntArray) -> None:
        self.draws += 1
        self.best_smallest = max(self.best_smallest, int(sizes.min()))
        self.short_clients += int((sizes < self.min_size).sum())
        self.client_draws += len(sizes)
        self.median_total += float(np.median(sizes))


def _failure_message(
    spec: DirichletConfig, num_clients: int, class_sizes: IntArray, t: _DrawTally
) -> str:
    short = t.short_clients / t.client_draws
    return (
        f"dirichlet partition (alpha={spec.alpha:g}) of {int(class_sizes.sum())} "
        f"examples in {len(class_sizes)} classes could not give all {num_clients} "
        f"clients at least min_size={spec.min_size} examples: 0 of {t.draws} draws "
        f"did (so one draw succeeds with probability below about "
        f"{min(1.0, 3 / t.draws):.2g}, 95% bound); the best draw's smallest client "
        f"had {t.best_smallest} examples; {short:.0%} of clients fell below "
        f"min_size (estimated P(client < min_size) = {short:.2f}, "
        f"{short * num_clients:.1f} of {num_clients} per draw), and the median "
        f"client held {t.median_total / t.draws:.1f} examples on average. "
        f"{_reason(spec.alpha, num_clients, class_sizes)}; {_FIX}"
    )


def _reason(alpha: float, num_clients: int, class_sizes: IntArray) -> str:
    mean = class_sizes.sum() / num_clients
    if alpha < 1:
        return (
            f"With alpha={alpha:g} below 1 each class goes mostly to a few clients, "
            f"so {len(class_sizes)} classes leave most of {num_clients} clients "
            f"with far fewer than the mean {mean:.0f} examples"
        )
    return f"Client sizes vary around the mean {mean:.0f} by more than min_size allows"


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
