"""SecAgg+ neighbour graphs and thresholds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.secagg.graph import (
    build_graph,
    complete_graph,
    harary_graph,
    log_degree,
    threshold_for,
)


@given(n=st.integers(2, 300), k=st.integers(1, 40), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_harary_graph_is_symmetric_and_regular(n: int, k: int, seed: int) -> None:
    graph = harary_graph(n, k, seed)
    assert len(graph) == n
    for u, neighbours in enumerate(graph):
        assert u not in neighbours
        assert all(u in graph[v] for v in neighbours)
    even = k + k % 2
    expected = even if even < n - 1 else n - 1
    assert {len(nb) for nb in graph} == {expected}


def test_graph_is_seeded() -> None:
    assert harary_graph(50, 6, 1) == harary_graph(50, 6, 1)
    assert harary_graph(50, 6, 1) != harary_graph(50, 6, 2)


def test_log_degree_by_hand() -> None:
    assert log_degree(100) == 14  # ceil(2 · 6.64) = 14
    assert log_degree(1000) == 20  # ceil(2 · 9.97) = 20
    assert log_degree(4) == 3  # capped at N − 1


def test_build_graph_names() -> None:
    assert build_graph(5, "complete", 0) == complete_graph(5)
    assert {len(n) for n in build_graph(100, "log2", 0)} == {14}
    with pytest.raises(ValueError, match="neighbours must be"):
        build_graph(5, "ring", 0)


def test_threshold_fraction_and_absolute() -> None:
    assert threshold_for(9, 0.5) == 5
    assert threshold_for(14, 0.5) == 7
    assert threshold_for(1, 0.5) == 1
    assert threshold_for(9, 3) == 3
    with pytest.raises(ValueError, match=r"t=10 must be in \[1, 9\]"):
        threshold_for(9, 10)
