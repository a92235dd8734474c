"""The communication graph of SecAgg+ and the per-neighbourhood threshold.

Bonawitz et al. 2017 mask every pair of clients (the complete graph): O(N) key
agreements and shares per client. SecAgg+ (Bell et al. 2020, "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", §3-4) masks and
shares only along the edges of a sparse random graph of degree k = O(log N);
its instantiation is a Harary graph H_{k,N} under a random relabelling of the
clients. The relabelling is drawn from a PUBLIC seed: the graph is known to
everyone, only the masks are secret, so a seeded numpy generator is fine here.
"""

from __future__ import annotations

import math

import numpy as np

Neighbourhoods = tuple[frozenset[int], ...]
"""``graph[u]`` is the set of u's neighbours (never u itself); symmetric."""


def complete_graph(num_clients: int) -> Neighbourhoods:
    """Every client is a neighbour of every other (Bonawitz et al. 2017)."""
    _check_clients(num_clients)
    everyone = frozenset(range(num_clients))
    return tuple(everyone - {u} for u in range(num_clients))


def log_degree(num_clients: int, factor: float = 2.0) -> int:
    """SecAgg+ degree k = ceil(factor · log2 N), rounded up to even, <= N − 1."""
    _check_clients(num_clients)
    k = math.ceil(factor * math.log2(num_clients))
    k += k % 2
    return max(1, min(k, num_clients - 1))


def harary_graph(num_clients: int, degree: int, seed: int) -> Neighbourhoods:
    """A randomly relabelled Harary graph H_{k,N} (Bell et al. 2020, §4).

    Positions on a ring are joined to the k/2 nearest positions on each side;
    client ``perm[i]`` sits at position i, ``perm`` a seeded permutation. An odd
    k is rounded up to even, so every client has exactly k neighbours; k >= N − 1
    gives the complete graph.

    Raises:
        ValueError: if N < 2 or k < 1.
    """
    _check_clients(num_clients)
    if degree < 1:
        raise ValueError(f"neighbour degree k must be >= 1, got {degree}")
    if degree + degree % 2 >= num_clients - 1:
        return complete_graph(num_clients)
    half = (degree + 1) // 2
    perm = np.random.default_rng(seed).permutation(num_clients)  # position -> id
    graph: list[set[int]] = [set() for _ in range(num_clients)]
    for pos in range(num_clients):
        u = int(perm[pos])
        for step in range(1, half + 1):
            v = int(perm[(pos + step) % num_clients])
            graph[u].add(v)
            graph[v].add(u)
    return tuple(frozenset(n) for n in graph)


def build_graph(num_clients: int, neighbours: int | str, seed: int) -> Neighbourhoods:
    """The graph named by ``SecAggConfig.neighbours``: 'complete', 'log2' or k.

    Raises:
        ValueError: on an unknown name or a bad degree.
    """
    if neighbours == "complete":
        return complete_graph(num_clients)
    if neighbours == "log2":
        return harary_graph(num_clients, log_degree(num_clients), seed)
    if isinstance(neighbours, int) and not isinstance(neighbours, bool):
        return harary_graph(num_clients, neighbours, seed)
    raise ValueError(
        f"neighbours must be 'complete', 'log2' or an int degree, got {neighbours!r}"
    )


def threshold_for(degree: int, threshold: float | int) -> int:
    """Shamir threshold t_u for a client with ``degree`` neighbours.

    A float is a fraction: t_u = max(1, ceil(fraction · degree)); an int is t.
    Secrets are shared among the neighbours, so t_u <= degree is required.

    Raises:
        ValueError: if the resulting t is not in [1, degree].
    """
    if isinstance(threshold, float):
        t = max(1, math.ceil(threshold * degree - 1e-9))
    else:
        t = threshold
    if not 1 <= t <= degree:
        raise ValueError(
            f"threshold t={t} must be in [1, {degree}] for a client with "
            f"{degree} neighbours; lower SecAggConfig.threshold"
        )
    return t


def _check_clients(num_clients: int) -> None:
    if num_clients < 2:
        raise ValueError(
            f"secure aggregation needs at least 2 clients, got {num_clients}"
        )
