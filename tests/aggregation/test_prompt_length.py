"""Tests for fedpeft.aggregation.prompt_length: nested-prefix prompt averaging."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.aggregation.mean import weighted_mean
from fedpeft.aggregation.prompt_length import aggregate_prompts, truncate_prompt
from fedpeft.types import Params


def _p(prompt: list[list[float]], head: list[float]) -> Params:
    return {
        "prompt": np.asarray(prompt, np.float32),
        "head": np.asarray(head, np.float32),
    }


GLOBAL = _p([[9, 9], [8, 8], [7, 7]], [0.0])  # L_max = 3, d = 2


def test_aggregate_prompts_hand_computed() -> None:
    c1 = _p([[1, 2]], [1.0])  # L = 1
    c2 = _p([[5, 6], [3, 4]], [5.0])  # L = 2
    out = aggregate_prompts([c1, c2], [1, 3], GLOBAL)
    # pos 0: (1·[1,2] + 3·[5,6]) / 4 = [4, 5]; pos 1: c2 only; pos 2: global kept
    np.testing.assert_allclose(out["prompt"], [[4, 5], [3, 4], [7, 7]])
    np.testing.assert_allclose(out["head"], [(1 + 15) / 4])
    assert out["prompt"].dtype == np.float32


def test_positions_held_only_by_zero_weight_clients_keep_global() -> None:
    out = aggregate_prompts(
        [_p([[1, 1]], [0.0]), _p([[2, 2], [3, 3]], [0.0])], [1, 0], GLOBAL
    )
    np.testing.assert_allclose(out["prompt"], [[1, 1], [8, 8], [7, 7]])


def test_truncate_prompt_gives_prefix() -> None:
    client = truncate_prompt(GLOBAL, 2)
    np.testing.assert_array_equal(client["prompt"], [[9, 9], [8, 8]])
    np.testing.assert_array_equal(client["head"], GLOBAL["head"])
    client["prompt"][0, 0] = -1.0
    assert GLOBAL["prompt"][0, 0] == 9.0  # no aliasing
    with pytest.raises(ValueError, match=r"prompt length must be in \[1, 3\], got 4"):
        truncate_prompt(GLOBAL, 4)
    with pytest.raises(ValueError, match="no prompt key 'soft'"):
        truncate_prompt(GLOBAL, 1, key="soft")


@pytest.mark.parametrize(
    ("client", "match"),
    [
        (_p([[1, 1]] * 4, [0.0]), r"1 <= L_k <= 3"),
        (_p([[1, 1, 1]], [0.0]), r"expected \(L_k, 2\)"),
        (_p([[np.nan, 1]], [0.0]), "NaN"),
        ({"head": np.zeros(1, np.float32)}, "lacks the prompt key"),
        (_p([[1, 1]], [0.0, 1.0]), "'head' has shape"),
    ],
)
def test_aggregate_prompts_rejects_bad_clients(client: Params, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        aggregate_prompts([_p([[1, 1]], [0.0]), client], [1, 1], GLOBAL)


def test_aggregate_prompts_rejects_bad_weights_and_empty() -> None:
    c = _p([[1, 1]], [0.0])
    with pytest.raises(ValueError, match="positive sum"):
        aggregate_prompts([c, c], [0, 0], GLOBAL)
    with pytest.raises(ValueError, match="finite"):
        aggregate_prompts([c, c], [1, np.nan], GLOBAL)
    with pytest.raises(ValueError, match="zero client states"):
        aggregate_prompts([], [], GLOBAL)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=5),
)
def test_each_position_is_the_mean_over_its_holders(
    seed: int, lengths: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    glob = {"prompt": rng.normal(size=(5, 3)).astype(np.float32)}
    states = [{"prompt": rng.normal(size=(n, 3)).astype(np.float32)} for n in lengths]
    w = rng.uniform(0.1, 2.0, size=len(lengths))
    out = aggregate_prompts(states, w, glob)["prompt"]
    for j in range(5):
        holders = [k for k, n in enumerate(lengths) if n > j]
        if not holders:
            np.testing.assert_array_equal(out[j], glob["prompt"][j])
            continue
        ws = w[holders] / w[holders].sum()
        want = sum(
            wk * states[k]["prompt"][j].astype(np.float64)
            for wk, k in zip(ws, holders, strict=True)
        )
        np.testing.assert_allclose(out[j], want, rtol=1e-5, atol=1e-6)
    perm = rng.permutation(len(lengths))
    shuffled = aggregate_prompts([states[i] for i in perm], w[perm], glob)["prompt"]
    np.testing.assert_allclose(shuffled, out, rtol=1e-6, atol=1e-6)


def test_equal_lengths_reduce_to_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    states = [_p(rng.normal(size=(3, 2)).tolist(), [float(k)]) for k in range(3)]
    out, ref = (
        aggregate_prompts(states, [1, 2, 3], GLOBAL),
        weighted_mean(states, [1, 2, 3]),
    )
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6)
