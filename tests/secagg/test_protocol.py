"""The whole protocol: secure sum = plain sum of the survivors, dropouts, aborts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedpeft.secagg import (
    InsufficientSurvivorsError,
    SecAggConfig,
    SecAggStats,
    secure_sum,
)
from fedpeft.secagg.config import GraphKind
from fedpeft.secagg.graph import Neighbourhoods, build_graph, threshold_for
from fedpeft.types import Params


def _updates(n: int, length: int, seed: int, r: float = 1.0) -> list[Params]:
    rng = np.random.default_rng(seed)
    return [
        {
            "w": rng.uniform(-r, r, size=(length,)).astype(np.float32),
            "b": rng.uniform(-r, r, size=(2,)).astype(np.float32),
        }
        for _ in range(n)
    ]


def _plain_sum(updates: list[Params], clients: tuple[int, ...]) -> Params:
    return {
        k: np.sum([updates[u][k].astype(np.float64) for u in clients], axis=0)
        for k in updates[0]
    }


def _assert_close(got: Params, want: Params, bound: float) -> None:
    for k in want:
        # quantization bound plus the float32 rounding of the returned sum
        tol = bound + np.abs(want[k]) * 2.0**-23 + 1e-12
        assert np.all(np.abs(got[k].astype(np.float64) - want[k]) <= tol), k


def _feasible(
    graph: Neighbourhoods,
    t: list[int],
    u1: set[int],
    u2: set[int],
    u3: set[int],
    u4: set[int],
) -> bool:
    """The documented abort rule, restated on sets (Bonawitz et al. §4, per
    neighbourhood as in SecAgg+): everyone still in the round keeps >= t_u
    neighbours through stages 0-1, and every secret the server must rebuild
    (b_u for u in U3; s_v^SK for dropped v with a neighbour in U3) has >= t
    holders among the clients that answer the unmask request (U4)."""

    def ok(clients: set[int], alive: set[int]) -> bool:
        return all(len(graph[u] & alive) >= t[u] for u in clients)

    needed = u3 | {v for v in u2 - u3 if graph[v] & u3}
    return ok(u1, u1) and ok(u2, u2) and bool(u3) and ok(needed, u4)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[int, SecAggConfig, list[set[int]]]:
    n = draw(st.integers(2, 30))
    choices: list[int | GraphKind] = ["complete", "log2", 4]
    neighbours = draw(st.sampled_from(choices))
    threshold = draw(st.sampled_from([0.3, 0.5, 0.7, 1.0, 2]))
    bits = draw(st.sampled_from([24, 32, 40]))
    config = SecAggConfig(
        bits=bits, threshold=threshold, neighbours=neighbours, secure=False
    )
    order = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.lists(st.integers(0, n // 3), min_size=3, max_size=3)))
    drops = [set(order[: cuts[0]]), set(order[cuts[0] : cuts[1]])]
    drops.append(set(order[cuts[1] : cuts[2]]))
    return n, config, drops


@given(scenario=_scenario(), seed=st.integers(0, 2**32), length=st.integers(1, 40))
@settings(max_examples=30, deadline=None)
def test_secure_sum_equals_plain_sum_of_survivors(
    scenario: tuple[int, SecAggConfig, list[set[int]]], seed: int, length: int
) -> None:
    n, config, (d0, d1, d2) = scenario
    updates = _updates(n, length, seed)
    graph = _graph_of_round(n, config, seed)

    def run() -> tuple[Params, SecAggStats]:
        return secure_sum(
            updates,
            config,
            dropped_after_advertise=d0,
            dropped_after_share=d1,
            dropped_after_mask=d2,
            rng=np.random.default_rng(seed),
        )

    if isinstance(config.threshold, int) and config.threshold > min(map(len, graph)):
        with pytest.raises(ValueError, match="threshold t="):
            run()
        return
    t = [threshold_for(len(nb), config.threshold) for nb in graph]
    u1 = set(range(n))
    u2, u3 = u1 - d0, u1 - d0 - d1
    u4 = u3 - d2
    feasible = _feasible(graph, t, u1, u2, u3, u4)
    event("completes" if feasible else "aborts")
    if not feasible:
        with pytest.raises(InsufficientSurvivorsError):
            run()
        return
    total, stats = run()
    assert stats.survivors == tuple(sorted(u3))
    _assert_close(total, _plain_sum(updates, stats.survivors), stats.error_bound)


def _graph_of_round(n: int, config: SecAggConfig, seed: int) -> Neighbourhoods:
    """The graph secure_sum builds: setup draws the session id (16 bytes) then
    the graph seed (8 bytes) from the server's child generator."""
    server_rng = np.random.default_rng(seed).spawn(2 * n + 1)[0]
    server_rng.bytes(16)
    graph_seed = int.from_bytes(server_rng.bytes(8), "big")
    return build_graph(n, config.neighbours, graph_seed)


def test_dropped_after_mask_is_in_the_sum_dropped_after_share_is_not() -> None:
    updates = _updates(8, 20, seed=3)
    config = SecAggConfig(threshold=0.5, secure=False)
    total, stats = secure_sum(
        updates,
        config,
        dropped_after_share=[1],
        dropped_after_mask=[4, 6],
        rng=np.random.default_rng(0),
    )
    assert stats.survivors == (0, 2, 3, 4, 5, 6, 7)
    _assert_close(total, _plain_sum(updates, stats.survivors), stats.error_bound)


def test_sparse_graph_with_dropouts_at_n_60() -> None:
    updates = _updates(60, 30, seed=4)
    config = SecAggConfig(neighbours="log2", threshold=0.5, secure=False)
    total, stats = secure_sum(
        updates,
        config,
        dropped_after_share=[5, 17],
        dropped_after_mask=[30],
        rng=np.random.default_rng(1),
    )
    assert stats.mean_degree == 12
    _assert_close(total, _plain_sum(updates, stats.survivors), stats.error_bound)


def test_too_few_survivors_raise_and_return_nothing() -> None:
    updates = _updates(6, 5, seed=5)
    config = SecAggConfig(threshold=4, secure=False)  # t = 4 of 5 neighbours
    result = None
    with pytest.raises(InsufficientSurvivorsError, match=r"t=4"):
        result = secure_sum(
            updates, config, dropped_after_mask=[0, 1], rng=np.random.default_rng(0)
        )
    assert result is None


def test_too_few_after_share_aborts_early() -> None:
    updates = _updates(5, 5, seed=6)
    config = SecAggConfig(threshold=1.0, secure=False)  # t = all 4 neighbours
    with pytest.raises(InsufficientSurvivorsError, match="masked inputs"):
        secure_sum(
            updates, config, dropped_after_share=[2], rng=np.random.default_rng(0)
        )


def test_clipping_applies_before_the_sum() -> None:
    updates = [{"w": np.array([5.0, -5.0, 0.25], dtype=np.float32)}] * 3
    config = SecAggConfig(clip_range=1.0, secure=False)
    total, stats = secure_sum(updates, config, rng=np.random.default_rng(0))
    want = {"w": np.array([3.0, -3.0, 0.75])}
    _assert_close(total, want, stats.error_bound)


def test_test_mode_is_reproducible_and_secure_mode_runs() -> None:
    updates = _updates(5, 10, seed=7)
    config = SecAggConfig(secure=False)
    a, sa = secure_sum(updates, config, rng=np.random.default_rng(9))
    b, sb = secure_sum(updates, config, rng=np.random.default_rng(9))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sa.sent == sb.sent
    c, sc = secure_sum(updates, SecAggConfig())
    _assert_close(c, _plain_sum(updates, tuple(range(5))), sc.error_bound)


def test_rng_and_secure_mode_are_checked() -> None:
    updates = _updates(3, 4, seed=8)
    with pytest.raises(ValueError, match="only used with"):
        secure_sum(updates, SecAggConfig(), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs an explicit numpy Generator"):
        secure_sum(updates, SecAggConfig(secure=False))


def test_bad_dropout_sets_are_refused() -> None:
    updates = _updates(4, 4, seed=9)
    config = SecAggConfig(secure=False)
    with pytest.raises(ValueError, match="outside"):
        secure_sum(
            updates, config, dropped_after_share=[7], rng=np.random.default_rng()
        )
    with pytest.raises(ValueError, match="in both"):
        secure_sum(
            updates,
            config,
            dropped_after_share=[1],
            dropped_after_mask=[1],
            rng=np.random.default_rng(),
        )


def test_overflow_is_refused_for_the_round() -> None:
    updates = _updates(10, 4, seed=10)
    config = SecAggConfig(bits=8, value_bits=6, secure=False)
    with pytest.raises(ValueError, match=r"N=10.*b=8.*largest safe N is 4"):
        secure_sum(updates, config, rng=np.random.default_rng(0))


def test_stats_count_real_bytes() -> None:
    updates = _updates(4, 100, seed=11)  # 102 values
    _, stats = secure_sum(
        updates, SecAggConfig(secure=False), rng=np.random.default_rng(0)
    )
    # masked input: 1 type byte + 3 u32 + u32 length + 102 values * 4 bytes
    assert stats.sent["mask"] == (1 + 16 + 408,) * 4
    # advertise: type + id + 2 length-prefixed 32-byte keys
    assert stats.sent["advertise"] == (1 + 4 + 2 * 36,) * 4
    assert all(s > 0 for s in stats.client_seconds) and stats.server_seconds > 0
    assert stats.sent_total()[0] == sum(v[0] for v in stats.sent.values())
