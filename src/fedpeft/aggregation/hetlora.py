"""HetLoRA: zero-padded, norm-weighted aggregation of mixed-rank LoRA factors.

Cho et al. 2024, "Heterogeneous LoRA for Federated Fine-tuning of On-Device
Foundation Models". Payload and scaling conventions: :mod:`fedpeft.aggregation.lora`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.lora import (
    RankScaling,
    _check_states,
    _dense_mean,
    _normalised,
    _ratio,
    lora_pairs,
    lora_products,
    lora_rank,
)
from fedpeft.types import Float64Array, Params, ParamsLike


def _adapter_norm(state: ParamsLike, rank_scaling: RankScaling) -> float:
    """``sqrt(Σ_pairs ‖s B A‖²_F)`` with α = 1."""
    products = lora_products(state, alpha=1.0, rank_scaling=rank_scaling)
    return math.sqrt(sum(float(np.sum(p * p)) for p in products.values()))


def hetlora_weights(
    states: Sequence[ParamsLike],
    weights: npt.ArrayLike,
    *,
    rank_scaling: RankScaling = "standard",
    norm_weighting: bool = True,
) -> Float64Array:
    """HetLoRA sparsity-weighted aggregation weights, shape (K,), summing to 1.

    Cho et al. 2024 ("Heterogeneous LoRA for Federated Fine-tuning of On-Device
    Foundation Models", §3.2, Fig. 2b) weight client k by ``‖ΔW_k‖_F / Z``. Here
    ``w_k ∝ n_k · ‖ΔW_k‖_F`` with ``‖ΔW_k‖_F = sqrt(Σ_pairs ‖s_k B_k A_k‖²_F)``
    over the whole adapter (α cancels after normalising); uniform ``weights``
    give the paper's rule. If every ΔW_k is zero (untrained adapters) or
    ``norm_weighting=False`` the weights are ``n_k / Σ n``. Each state is
    checked on its own, so clients may hold different pairs (e.g. LoRA on
    different layers): the norm is over the pairs each one holds.
    """
    for state in states:
        _check_states([state])
    n = _normalised(weights, len(states))
    if not norm_weighting:
        return n
    norms = np.array([_adapter_norm(s, rank_scaling) for s in states])  # (K,)
    w = n * norms
    return n if not w.sum() > 0 else _normalised(w, len(states))


def hetlora_aggregate(
    states: Sequence[ParamsLike],
    weights: npt.ArrayLike,
    *,
    rank_scaling: RankScaling = "standard",
    norm_weighting: bool = True,
) -> Params:
    """HetLoRA server step: zero-pad to r_max, then weighted-average the factors.

    Cho et al. 2024, §3.2, Fig. 2a-b. Per pair with r_max = max_k r_k::

        A = Σ_k w_k · pad_rows(A_k, r_max)                      # (r_max, in)
        B = Σ_k w_k · pad_cols(B_k · s(r_k)/s(r_max), r_max)    # (out, r_max)

    with w from :func:`hetlora_weights`. Padded zeros count in the average, so
    components few clients hold are shrunk (the paper's rule). Dense keys use
    ``n_k / Σ n``. With equal ranks and ``norm_weighting=False`` this is FedAvg
    of A and B.

    Returns:
        The global state at rank r_max (float32); see :func:`hetlora_truncate`.
    """
    pairs = _check_states(states)
    w = hetlora_weights(
        states, weights, rank_scaling=rank_scaling, norm_weighting=norm_weighting
    )
    out = _dense_mean(states, pairs, _normalised(weights, len(states)))
    for ka, kb in pairs.values():
        r_max = max(s[ka].shape[0] for s in states)
        a = np.zeros((r_max, states[0][ka].shape[1]))  # (r_max, in)
        b = np.zeros((states[0][kb].shape[0], r_max))  # (out, r_max)
        for w_k, s in zip(w, states, strict=True):
            r = s[ka].shape[0]
            a[:r] += w_k * np.asarray(s[ka], np.float64)
            b[:, :r] += (
                w_k * _ratio(r, r_max, rank_scaling) * np.asarray(s[kb], np.float64)
            )
        out[ka], out[kb] = a.astype(np.float32), b.astype(np.float32)
    return out


def hetlora_truncate(
    global_state: ParamsLike, rank: int, *, rank_scaling: RankScaling = "standard"
) -> Params:
    """A client's adapter at ``rank``: the first r rows of A, r columns of B.

    Cho et al. 2024, Fig. 2c. B is multiplied by ``s(r_global)/s(r)`` so each
    kept component's effective contribution is unchanged (see
    :mod:`fedpeft.aggregation.lora`). Also serves FFA-LoRA's global state.

    Raises:
        ValueError: if ``rank`` < 1 or exceeds some pair's global rank.
    """
    ranks = lora_rank(global_state)
    if rank < 1 or rank > min(ranks.values(), default=rank):
        raise ValueError(
            f"rank must be in [1, {min(ranks.values(), default=rank)}] (the "
            f"global ranks are {ranks}), got {rank}"
        )
    out = {k: np.array(v, dtype=np.float32) for k, v in global_state.items()}
    for name, (ka, kb) in lora_pairs(global_state).items():
        factor = _ratio(ranks[name], rank, rank_scaling)
        out[ka] = out[ka][:rank].copy()
        out[kb] = (np.asarray(out[kb][:, :rank], np.float64) * factor).astype(
            np.float32
        )
    return out
