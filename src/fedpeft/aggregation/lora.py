"""LoRA payloads: factor pairs, ranks, scaling, products, and FedAvg of equal ranks.

The rules for ranks that differ across clients build on these helpers:
:mod:`fedpeft.aggregation.hetlora`, :mod:`fedpeft.aggregation.flexlora` and
:mod:`fedpeft.aggregation.ffa_lora`.

Payload convention (client *states*, HF PEFT naming). A pair is a key holding
``lora_A`` whose ``lora_A`` → ``lora_B`` replacement is also a key::

    A = params["<prefix>lora_A<suffix>"]   # (r, in_features)
    B = params["<prefix>lora_B<suffix>"]   # (out_features, r)
    ΔW = s(r) · B @ A                      # (out_features, in_features)

with ``s(r) = α / r`` (``"standard"``, Hu et al. 2021, eq. 3) or ``α / √r``
(``"rslora"``, Kalajdzievski 2023). The pair's *name* is the A key with
``lora_A`` replaced by ``lora_delta``;
:func:`~fedpeft.aggregation.flexlora.flexlora_aggregate` stores ΔW under that
name. Every other key is *dense* (heads, biases) and is averaged with the client
weights by :func:`fedpeft.aggregation.mean.weighted_mean`.

Rank changes (padding, truncation) keep ΔW in *effective units*: when a
component moves from rank r to rank r', its B column is multiplied by
``s(r) / s(r')`` so that ``s · B[:, i] ⊗ A[i, :]`` is unchanged. α cancels from
that ratio, so only the methods that return ΔW itself (FlexLoRA) take α. With
equal ranks every ratio is 1 and the factors are averaged as stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.mean import (
    check_weights,
    weighted_mean,
)
from fedpeft.types import Float64Array, Params, ParamsLike

RankScaling = Literal["standard", "rslora"]
RANK_SCALINGS: tuple[str, ...] = get_args(RankScaling)
LORA_A, LORA_B, LORA_DELTA = "lora_A", "lora_B", "lora_delta"


# ---------------------------------------------------------------- helpers


def lora_pairs(params: ParamsLike) -> dict[str, tuple[str, str]]:
    """Find the LoRA factor pairs: ``{pair name: (A key, B key)}``.

    The pair name is the A key with ``lora_A`` replaced by ``lora_delta``.

    Raises:
        ValueError: if a ``lora_A`` key has no ``lora_B`` partner or vice versa
            (a truncated payload), or a pair name collides with a key.
    """
    pairs = {
        key.replace(LORA_A, LORA_DELTA): (key, key.replace(LORA_A, LORA_B))
        for key in sorted(params)
        if LORA_A in key
    }
    b_keys = {kb for _, kb in pairs.values()}
    for key in params:
        orphan_a = LORA_A in key and key.replace(LORA_A, LORA_B) not in params
        if orphan_a or (LORA_B in key and key not in b_keys):
            raise ValueError(
                f"LoRA key {key!r} has no partner; every lora_A tensor needs the "
                "matching lora_B tensor (same name with lora_A -> lora_B)"
            )
    for name, (ka, _) in pairs.items():
        if name in params:
            raise ValueError(f"key {name!r} collides with the pair name of {ka!r}")
    return pairs


def lora_rank(params: ParamsLike) -> dict[str, int]:
    """Rank r of every pair ``{pair name: r}``, checking A is (r, in), B (out, r).

    Raises:
        ValueError: if a factor is not 2-D, A's rows differ from B's columns, or
            r < 1.
    """
    ranks: dict[str, int] = {}
    for name, (ka, kb) in lora_pairs(params).items():
        a_shape, b_shape = np.shape(params[ka]), np.shape(params[kb])
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise ValueError(
                f"pair {name!r}: A {a_shape} and B {b_shape} must be (r, in) and "
                "(out, r) with the same r"
            )
        if a_shape[0] < 1:
            raise ValueError(f"pair {name!r} has rank {a_shape[0]}; need r >= 1")
        ranks[name] = int(a_shape[0])
    return ranks


def lora_scaling(alpha: float, rank: int, rank_scaling: RankScaling) -> float:
    """LoRA scaling s = α/r (``"standard"``) or α/√r (``"rslora"``).

    Raises:
        ValueError: for α not finite and > 0, rank < 1, or an unknown scaling.
    """
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if rank_scaling == "standard":
        return alpha / rank
    if rank_scaling == "rslora":
        return alpha / math.sqrt(rank)
    raise ValueError(
        f"rank_scaling must be one of {RANK_SCALINGS}, got {rank_scaling!r}"
    )


def _ratio(r_from: int, r_to: int, rank_scaling: RankScaling) -> float:
    """``s(r_from) / s(r_to)``: B-column factor that moves a component's rank."""
    return lora_scaling(1.0, r_from, rank_scaling) / lora_scaling(
        1.0, r_to, rank_scaling
    )


def lora_products(
    params: ParamsLike, *, alpha: float, rank_scaling: RankScaling = "standard"
) -> dict[str, Float64Array]:
    """Effective weight deltas ``{pair name: s(r) · B @ A}`` in float64."""
    ranks = lora_rank(params)
    out: dict[str, Float64Array] = {}
    for name, (ka, kb) in lora_pairs(params).items():
        s = lora_scaling(alpha, ranks[name], rank_scaling)
        out[name] = s * (np.asarray(params[kb], np.float64) @ params[ka])
    return out


def _check_states(states: Sequence[ParamsLike]) -> dict[str, tuple[str, str]]:
    """Validate client states (same keys, matching in/out features, finite) and
    return their pairs."""
    if len(states) == 0:
        raise ValueError("cannot aggregate zero client states; need at least one")
    pairs = lora_pairs(states[0])
    if not pairs:
        raise ValueError(
            f"no lora_A/lora_B pairs among keys {sorted(states[0])}; expected "
            "HF PEFT names such as '...query.lora_A.weight'"
        )
    for i, state in enumerate(states):
        if set(state) != set(states[0]):
            raise ValueError(
                f"state {i} has keys {sorted(state)}, expected {sorted(states[0])}"
            )
        lora_rank(state)
        for name, (ka, kb) in pairs.items():
            out_in = (state[kb].shape[0], state[ka].shape[1])
            ref = (states[0][kb].shape[0], states[0][ka].shape[1])
            if out_in != ref:
                raise ValueError(
                    f"state {i} pair {name!r} has (out, in) = {out_in}, expected "
                    f"{ref}; only the rank may differ across clients"
                )
        for key, arr in state.items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(
                    f"state {i} tensor {key!r} contains NaN or infinite values"
                )
    return pairs


def _normalised(weights: npt.ArrayLike, count: int) -> Float64Array:
    w = check_weights(weights, count)
    normalised: Float64Array = w / w.sum()
    return normalised


def _dense_mean(
    states: Sequence[ParamsLike], pairs: Mapping[str, tuple[str, str]], w: Float64Array
) -> Params:
    """Weighted mean of the keys that belong to no pair (shapes must match)."""
    lora_keys = {key for pair in pairs.values() for key in pair}
    dense = [{k: v for k, v in s.items() if k not in lora_keys} for s in states]
    return weighted_mean(dense, w)


# ---------------------------------------------------------------- FedAvg


def fedavg_lora(states: Sequence[ParamsLike], weights: npt.ArrayLike) -> Params:
    """Plain FedAvg of A and B separately (equal ranks only).

    McMahan et al. 2017, Algorithm 1, via
    :func:`fedpeft.aggregation.mean.weighted_mean`. Note
    ``mean(B) @ mean(A) != mean(B @ A)`` in general; see FFA-LoRA and FlexLoRA.

    Raises:
        ValueError: if client ranks differ (use a heterogeneous rule instead).
    """
    _check_states(states)
    ranks = [lora_rank(s) for s in states]
    if any(r != ranks[0] for r in ranks):
        raise ValueError(
            f"fedavg_lora needs equal ranks, got {ranks}; use hetlora_aggregate, "
            "flexlora_aggregate or ffa_lora_aggregate"
        )
    return weighted_mean(states, weights)
