"""Tests for fedpeft.aggregation.lora, .hetlora, .flexlora and .ffa_lora:
heterogeneous-rank LoRA aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.aggregation.ffa_lora import ffa_lora_aggregate
from fedpeft.aggregation.flexlora import flexlora_aggregate, flexlora_distribute
from fedpeft.aggregation.hetlora import (
    hetlora_aggregate,
    hetlora_truncate,
    hetlora_weights,
)
from fedpeft.aggregation.lora import (
    RankScaling,
    fedavg_lora,
    lora_pairs,
    lora_products,
    lora_rank,
    lora_scaling,
)
from fedpeft.aggregation.mean import weighted_mean
from fedpeft.types import Params

QA, QB = "m.q.lora_A.weight", "m.q.lora_B.weight"
VA, VB = "m.v.lora_A.weight", "m.v.lora_B.weight"
Q, V = "m.q.lora_delta.weight", "m.v.lora_delta.weight"
OUT, IN = 5, 3  # non-square, so a transposed factor cannot even be multiplied


def _f32(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _state(rng: np.random.Generator, rank: int, a: np.ndarray | None = None) -> Params:
    """Two LoRA pairs at ``rank`` plus dense head tensors."""
    return {
        QA: _f32(rng.normal(size=(rank, IN))) if a is None else _f32(a[:rank]),
        QB: _f32(rng.normal(size=(OUT, rank))),
        VA: _f32(rng.normal(size=(rank, IN))),
        VB: _f32(rng.normal(size=(OUT, rank))),
        "head.weight": _f32(rng.normal(size=(2, OUT))),
        "head.bias": _f32(rng.normal(size=2)),
    }


def _mean_products(
    states: list[Params],
    w: list[float],
    alpha: float,
    scaling: RankScaling = "standard",
) -> dict[str, np.ndarray]:
    w_n = np.asarray(w) / np.sum(w)
    prods = [lora_products(s, alpha=alpha, rank_scaling=scaling) for s in states]
    return {
        n: sum(wk * p[n] for wk, p in zip(w_n, prods, strict=True)) for n in prods[0]
    }


# ------------------------------------------------------------------ helpers


def test_pairs_ranks_and_scaling() -> None:
    state = _state(np.random.default_rng(0), 3)
    assert lora_pairs(state) == {Q: (QA, QB), V: (VA, VB)}
    assert lora_rank(state) == {Q: 3, V: 3}
    assert lora_scaling(16.0, 4, "standard") == 4.0
    assert lora_scaling(16.0, 4, "rslora") == 8.0
    with pytest.raises(ValueError, match="alpha must be"):
        lora_scaling(0.0, 4, "standard")
    with pytest.raises(ValueError, match="rank_scaling must be one of"):
        lora_scaling(1.0, 4, "bogus")  # type: ignore[arg-type]


def test_pair_detection_rejects_orphans_and_bad_shapes() -> None:
    state = _state(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="has no partner"):
        lora_pairs({k: v for k, v in state.items() if k != QB})
    with pytest.raises(ValueError, match="has no partner"):
        lora_pairs({k: v for k, v in state.items() if k != QA})
    with pytest.raises(ValueError, match="same r"):
        lora_rank({**state, QB: _f32(np.zeros((OUT, 3)))})


def test_lora_products_hand_value() -> None:
    state = {"x.lora_A": _f32([[1.0, 2.0]]), "x.lora_B": _f32([[3.0], [1.0]])}
    # s = 4/1; B @ A = [[3, 6], [1, 2]]
    prods = lora_products(state, alpha=4.0)
    np.testing.assert_array_equal(prods["x.lora_delta"], [[12, 24], [4, 8]])


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0, float("nan")], "finite"), ([1.0, -1.0], ">= 0"), ([0.0, 0.0], "positive")],
)
def test_all_rules_reject_bad_weights(weights: list[float], match: str) -> None:
    rng = np.random.default_rng(1)
    states = [_state(rng, 2), _state(rng, 3)]
    for rule in (hetlora_aggregate, ffa_lora_aggregate):
        with pytest.raises(ValueError, match=match):
            rule(states, weights)
    with pytest.raises(ValueError, match=match):
        flexlora_aggregate(states, weights, alpha=1.0)


def test_rejects_bad_states() -> None:
    rng = np.random.default_rng(2)
    good = _state(rng, 2)
    with pytest.raises(ValueError, match="zero client states"):
        hetlora_aggregate([], [])
    with pytest.raises(ValueError, match="NaN"):
        hetlora_aggregate([good, {**good, VB: _f32(np.full((OUT, 2), np.nan))}], [1, 1])
    with pytest.raises(ValueError, match=r"\(out, in\)"):
        hetlora_aggregate([good, {**good, QA: _f32(np.ones((2, IN + 1)))}], [1, 1])
    with pytest.raises(ValueError, match="has keys"):
        hetlora_aggregate([good, {**good, "extra": _f32([1.0])}], [1, 1])
    with pytest.raises(ValueError, match=r"head\.bias' has shape"):
        hetlora_aggregate([good, {**good, "head.bias": _f32([1.0])}], [1, 1])
    with pytest.raises(ValueError, match="no lora_A/lora_B pairs"):
        hetlora_aggregate([{"w": _f32([1.0])}], [1])


def test_fedavg_lora_is_weighted_mean_and_needs_equal_ranks() -> None:
    rng = np.random.default_rng(3)
    states = [_state(rng, 2), _state(rng, 2)]
    out, ref = fedavg_lora(states, [1, 3]), weighted_mean(states, [1, 3])
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    with pytest.raises(ValueError, match="needs equal ranks"):
        fedavg_lora([_state(rng, 2), _state(rng, 3)], [1, 1])


# ------------------------------------------------------------------ HetLoRA


def _tiny_pair(a: list[list[float]], b: list[list[float]]) -> Params:
    return {"x.lora_A": _f32(a), "x.lora_B": _f32(b), "bias": _f32([float(len(a))])}


def test_hetlora_pad_and_average_hand_computed() -> None:
    c1 = _tiny_pair([[1, 2]], [[1], [0]])  # rank 1
    c2 = _tiny_pair([[3, 4], [5, 6]], [[1, 0], [0, 1]])  # rank 2
    out = hetlora_aggregate([c1, c2], [1, 1], norm_weighting=False)
    # A: 0.5 * [[1, 2], [0, 0]] + 0.5 * [[3, 4], [5, 6]]
    np.testing.assert_allclose(out["x.lora_A"], [[2.0, 3.0], [2.5, 3.0]])
    # B: client 1's column scaled by s(1)/s(2) = 2, then padded and averaged
    np.testing.assert_allclose(out["x.lora_B"], [[1.5, 0], [0, 0.5]])
    np.testing.assert_allclose(out["bias"], [1.5])  # dense: (1 + 2) / 2
    rs = hetlora_aggregate(
        [c1, c2], [1, 1], norm_weighting=False, rank_scaling="rslora"
    )
    np.testing.assert_allclose(
        rs["x.lora_B"], [[0.5 * np.sqrt(2) + 0.5, 0], [0, 0.5]], rtol=1e-6
    )


def test_hetlora_norm_weights_hand_computed() -> None:
    c1 = _tiny_pair([[1, 2]], [[1], [0]])  # ΔW/α = [[1, 2], [0, 0]], norm √5
    c2 = _tiny_pair([[3, 4], [5, 6]], [[1, 0], [0, 1]])  # ΔW/α = A/2, norm √86/2
    w = hetlora_weights([c1, c2], [1, 2])
    expected = np.array([1 * np.sqrt(5), 2 * np.sqrt(86) / 2])
    np.testing.assert_allclose(w, expected / expected.sum())
    out = hetlora_aggregate([c1, c2], [1, 2])
    np.testing.assert_allclose(out["x.lora_A"][1], w[1] * np.array([5, 6]), rtol=1e-6)
    np.testing.assert_allclose(out["bias"], [(1 + 2 * 2) / 3], rtol=1e-6)  # n_k only


def test_hetlora_zero_adapters_fall_back_to_counts() -> None:
    zero = {"x.lora_A": _f32(np.ones((2, 3))), "x.lora_B": _f32(np.zeros((4, 2)))}
    np.testing.assert_allclose(hetlora_weights([zero, zero], [1, 3]), [0.25, 0.75])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 4))
def test_hetlora_equal_ranks_without_norms_is_fedavg(seed: int, rank: int) -> None:
    rng = np.random.default_rng(seed)
    states = [_state(rng, rank) for _ in range(3)]
    w = rng.uniform(0.1, 5.0, size=3)
    out, ref = (
        hetlora_aggregate(states, w, norm_weighting=False),
        weighted_mean(states, w),
    )
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)


def test_hetlora_truncate_shapes_and_effective_units() -> None:
    rng = np.random.default_rng(4)
    glob = _state(rng, 4)
    client = hetlora_truncate(glob, 2)
    assert client[QA].shape == (2, IN) and client[QB].shape == (OUT, 2)
    np.testing.assert_array_equal(client[QA], glob[QA][:2])
    # B x s(4)/s(2) = 1/2: the smaller rank has the larger scaling
    np.testing.assert_allclose(client[QB], glob[QB][:, :2] * 0.5, rtol=1e-6)
    # effective product of the kept components is unchanged
    kept = {QA: glob[QA][:2], QB: glob[QB][:, :2]}
    np.testing.assert_allclose(
        lora_products(client, alpha=8.0)[Q],
        (8.0 / 4) * (kept[QB].astype(np.float64) @ kept[QA]),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match=r"rank must be in \[1, 4\]"):
        hetlora_truncate(glob, 5)


def test_hetlora_single_client_round_trips() -> None:
    rng = np.random.default_rng(5)
    small, big = _state(rng, 2), _state(rng, 4)
    out = hetlora_aggregate([small, big], [1.0, 0.0], norm_weighting=False)
    back = hetlora_truncate(out, 2)
    for k in small:
        np.testing.assert_allclose(back[k], small[k], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ FlexLoRA


def test_flexlora_aggregate_hand_computed() -> None:
    c1 = {"x.lora_A": _f32([[1, 0]]), "x.lora_B": _f32([[2], [0]])}  # BA=[[2,0],[0,0]]
    c2 = {"x.lora_A": _f32([[0, 1], [0, 0]]), "x.lora_B": _f32([[0, 0], [4, 0]])}
    # alpha 2: s1 = 2, s2 = 1; products [[4,0],[0,0]] and [[0,0],[0,4]]
    out = flexlora_aggregate([c1, c2], [3, 1], alpha=2.0)
    np.testing.assert_allclose(out["x.lora_delta"], [[3, 0], [0, 1]])
    client = flexlora_distribute(out, 1, alpha=2.0)  # best rank 1: [[3,0],[0,0]]
    assert client["x.lora_A"].shape == (1, 2) and client["x.lora_B"].shape == (2, 1)
    np.testing.assert_allclose(
        lora_products(client, alpha=2.0)["x.lora_delta"], [[3, 0], [0, 0]], atol=1e-6
    )


def _split_error(dw: np.ndarray, b: np.ndarray, a: np.ndarray, s: float) -> float:
    """‖s·B@A − dw‖_F, or inf when the factors cannot form an (out, in) matrix."""
    if (
        b.shape[0] != dw.shape[0]
        or a.shape[1] != dw.shape[1]
        or b.shape[1] != a.shape[0]
    ):
        return float("inf")
    return float(np.linalg.norm(s * (b.astype(np.float64) @ a) - dw))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 3))
def test_flexlora_exact_when_average_has_low_rank(seed: int, rank: int) -> None:
    rng = np.random.default_rng(seed)
    base_a = rng.normal(size=(rank, IN))  # shared row space -> rank(ΔW) <= rank
    states = [
        {"x.lora_A": _f32(base_a), "x.lora_B": _f32(rng.normal(size=(OUT, rank)))}
        for _ in range(3)
    ]
    w = rng.uniform(0.5, 2.0, size=3)
    prods = flexlora_aggregate(states, w, alpha=4.0, rank_scaling="rslora")
    dw = _mean_products(states, list(w), 4.0, "rslora")["x.lora_delta"]
    client = flexlora_distribute(prods, rank, alpha=4.0, rank_scaling="rslora")
    s = lora_scaling(4.0, rank, "rslora")
    assert client["x.lora_B"].shape == (OUT, rank) and client["x.lora_A"].shape == (
        rank,
        IN,
    )
    err = _split_error(dw, client["x.lora_B"], client["x.lora_A"], s)
    assert err <= 1e-4 * max(1.0, float(np.linalg.norm(dw)))


def test_flexlora_is_best_rank_r_and_transposed_split_fails() -> None:
    rng = np.random.default_rng(6)
    states = [_state(rng, 3) for _ in range(4)]  # average has rank 3 (full)
    prods = flexlora_aggregate(states, [1, 2, 3, 4], alpha=8.0)
    dw = prods[Q].astype(np.float64)
    client = flexlora_distribute(prods, 2, alpha=8.0)
    sigma = np.linalg.svd(dw, compute_uv=False)
    err = _split_error(dw, client[QB], client[QA], lora_scaling(8.0, 2, "standard"))
    np.testing.assert_allclose(err, sigma[2], rtol=1e-4)  # Eckart-Young tail
    # the same check rejects a transposed split (B from V, A from U)
    u, sig, vt = np.linalg.svd(dw, full_matrices=False)
    root = np.sqrt(sig[:2] / lora_scaling(8.0, 2, "standard"))
    assert _split_error(dw, vt[:2].T * root, root[:, None] * u[:, :2].T, 2.0) == np.inf
    square = dw[:IN, :IN]
    u, sig, vt = np.linalg.svd(square)
    bad = _split_error(square, vt.T * np.sqrt(sig), np.sqrt(sig)[:, None] * u.T, 1.0)
    assert bad > 1e-2 * np.linalg.norm(square)
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(out, in\)\]"):
        flexlora_distribute(prods, IN + 1, alpha=8.0)
    np.testing.assert_array_equal(client["head.bias"], prods["head.bias"])


# ------------------------------------------------------------------ FFA-LoRA


def test_ffa_equal_ranks_averages_products_exactly_unlike_fedavg() -> None:
    rng = np.random.default_rng(7)
    frozen = rng.normal(size=(3, IN))
    states = [_state(rng, 3, a=frozen) for _ in range(3)]
    states = [{**s, VA: states[0][VA]} for s in states]  # V's A shared too
    w = [1.0, 2.0, 5.0]
    want = _mean_products(states, w, 6.0)
    got = lora_products(ffa_lora_aggregate(states, w), alpha=6.0)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    # reference: plain FedAvg of freely trained A and B misses the mean product
    free = [_state(rng, 3) for _ in range(3)]
    naive = lora_products(fedavg_lora(free, w), alpha=6.0)[Q]
    assert np.linalg.norm(naive - _mean_products(free, w, 6.0)[Q]) > 1e-2


def test_ffa_heterogeneous_ranks_average_columns_over_holders() -> None:
    frozen = {"x.lora_A": _f32([[1, 0], [0, 1], [1, 1]])}
    c1 = {"x.lora_A": _f32([[1, 0]]), "x.lora_B": _f32([[3], [3]])}
    c2 = {"x.lora_A": frozen["x.lora_A"][:2], "x.lora_B": _f32([[1, 2], [1, 2]])}
    out = ffa_lora_aggregate([c1, c2], [1, 1], frozen)
    # r_max 2; column 0: (3·s(1)/s(2) + 1) / 2 = 3.5; column 1: only c2 -> 2
    np.testing.assert_allclose(out["x.lora_B"], [[3.5, 2], [3.5, 2]])
    np.testing.assert_array_equal(out["x.lora_A"], frozen["x.lora_A"][:2])
    same = ffa_lora_aggregate([c1, c2], [1, 1])  # reference A from c2
    np.testing.assert_array_equal(same["x.lora_B"], out["x.lora_B"])
    zero_holder = ffa_lora_aggregate([c1, c2], [1, 0], frozen)  # column 1 unheld
    np.testing.assert_allclose(zero_holder["x.lora_B"], [[6, 0], [6, 0]])


def test_ffa_rejects_drifted_or_short_frozen_a() -> None:
    frozen = {"x.lora_A": _f32([[1, 0], [0, 1]])}
    c1 = {"x.lora_A": _f32([[1, 0]]), "x.lora_B": _f32([[1], [1]])}
    drifted = {"x.lora_A": _f32([[1, 0.5]]), "x.lora_B": _f32([[1], [1]])}
    with pytest.raises(
        ValueError, match=r"differs from the frozen A \(max \|diff\| = 0.5"
    ):
        ffa_lora_aggregate([c1, drifted], [1, 1], frozen)
    with pytest.raises(ValueError, match="differs from the frozen A"):
        ffa_lora_aggregate([c1, drifted], [1, 1])
    with pytest.raises(ValueError, match="need \\(>= 2, 2\\)"):
        big = {"x.lora_A": _f32([[1, 0], [0, 1]]), "x.lora_B": _f32(np.ones((2, 2)))}
        ffa_lora_aggregate([c1, big], [1, 1], {"x.lora_A": frozen["x.lora_A"][:1]})
    with pytest.raises(ValueError, match="frozen_A lacks"):
        ffa_lora_aggregate([c1], [1], {})


def test_flexlora_null_components_take_the_initial_A_and_keep_the_product() -> None:  # noqa: N802
    rng = np.random.default_rng(7)
    init = {QA: _f32(rng.normal(size=(4, IN))), VA: _f32(rng.normal(size=(4, IN)))}
    # First round: every product is zero; plain SVD gives A = B = 0 (dead).
    zero = {Q: np.zeros((OUT, IN), np.float32), V: np.zeros((OUT, IN), np.float32)}
    dead = flexlora_distribute(zero, 2, alpha=2.0)
    assert not dead[QA].any() and not dead[QB].any()
    alive = flexlora_distribute(zero, 2, alpha=2.0, null_A=init)
    np.testing.assert_array_equal(alive[QA], init[QA][:2])
    assert not alive[QB].any()
    # A rank-1 product at rank 3: one real component, two filled null ones.
    c = _state(rng, 1)
    prods = flexlora_aggregate([c], [1.0], alpha=2.0)
    client = flexlora_distribute(prods, 3, alpha=2.0, null_A=init)
    np.testing.assert_array_equal(client[QA][1:], init[QA][1:3])
    np.testing.assert_allclose(
        lora_products(client, alpha=2.0)[Q], prods[Q], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="null_A lacks"):
        flexlora_distribute(zero, 2, alpha=2.0, null_A={QA: init[QA]})
    with pytest.raises(ValueError, match="need"):
        flexlora_distribute(zero, 2, alpha=2.0, null_A={QA: init[QA][:1], VA: init[VA]})
