"""FlexLoRA: average the full-size products, redistribute by truncated SVD.

Bai et al. 2024, "Federated Fine-tuning of Large Language Models under
Heterogeneous Tasks and Client Resources". Payload and scaling conventions:
:mod:`fedpeft.aggregation.lora`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.lora import (
    LORA_A,
    LORA_B,
    LORA_DELTA,
    RankScaling,
    _check_states,
    _dense_mean,
    _normalised,
    lora_products,
    lora_scaling,
)
from fedpeft.types import Float64Array, Params, ParamsLike


def flexlora_aggregate(
    states: Sequence[ParamsLike],
    weights: npt.ArrayLike,
    *,
    alpha: float,
    rank_scaling: RankScaling = "standard",
) -> Params:
    """FlexLoRA server step: weighted mean of full-size products.

    Bai et al. 2024 ("Federated Fine-tuning of Large Language Models under
    Heterogeneous Tasks and Client Resources", §3, eq. 3):
    ``ΔW = Σ_k w_k · s(r_k) B_k A_k`` per pair, w = weights / Σ weights.

    Returns:
        ``{pair name: ΔW}`` (``lora_delta`` keys, shape (out, in)) plus the
        dense keys' weighted mean, float32. Feed to :func:`flexlora_distribute`.
    """
    pairs = _check_states(states)
    w = _normalised(weights, len(states))
    out = _dense_mean(states, pairs, w)
    acc: dict[str, Float64Array] = {}
    for w_k, s in zip(w, states, strict=True):
        for name, prod in lora_products(
            s, alpha=alpha, rank_scaling=rank_scaling
        ).items():
            acc[name] = acc.get(name, 0.0) + w_k * prod
    out.update({name: dw.astype(np.float32) for name, dw in acc.items()})
    return out


def flexlora_distribute(
    products: ParamsLike,
    rank: int,
    *,
    alpha: float,
    rank_scaling: RankScaling = "standard",
    null_A: ParamsLike | None = None,  # noqa: N803 (the paper's A)
    rtol: float = 1e-5,
) -> Params:
    """A client's (A, B) at ``rank`` from the averaged products (SVD split).

    Bai et al. 2024, §3, eq. 4: ``ΔW = U Σ Vᵀ``; with s = s(rank)::

        B = U_r · sqrt(Σ_r / s)            # (out, r)
        A = sqrt(Σ_r / s)[:, None] · V_rᵀ  # (r, in)

    so ``s · B @ A = U_r Σ_r V_rᵀ``, the best rank-r approximation (Eckart-Young),
    exact when rank(ΔW) <= r. Computed in float64.

    A *null* component (σ_i <= rtol · σ_1, or every σ when ΔW = 0, as in the
    first round) would give A row and B column both ~0, and a LoRA component
    whose A and B are both zero never receives a gradient. With ``null_A``
    (each pair's A key mapped to a (>= rank, in) array, e.g. the seeded initial
    A) such a row of A is taken from ``null_A`` and its B column set to 0, so
    the component can train again while ``s · B @ A`` still equals the
    truncation up to components below ``rtol · σ_1``.

    Raises:
        ValueError: if rank < 1 or exceeds min(out, in) of some product, or
            ``null_A`` lacks a pair or is too small.
    """
    s = lora_scaling(alpha, rank, rank_scaling)
    out: Params = {}
    for key, value in products.items():
        if LORA_DELTA not in key:
            out[key] = np.array(value, dtype=np.float32)
            continue
        dw = np.asarray(value, np.float64)  # (out, in)
        if dw.ndim != 2 or not 1 <= rank <= min(dw.shape):
            raise ValueError(
                f"rank must be in [1, min(out, in)] for product {key!r} of shape "
                f"{dw.shape}, got {rank}"
            )
        u, sigma, vt = np.linalg.svd(dw, full_matrices=False)
        root = np.sqrt(sigma[:rank] / s)  # (r,)
        b = u[:, :rank] * root  # (out, r)
        a = root[:, None] * vt[:rank]  # (r, in)
        ka = key.replace(LORA_DELTA, LORA_A)
        if null_A is not None:
            null = sigma[:rank] <= rtol * sigma[0]  # all of them when ΔW = 0
            if null.any():
                fill = _null_rows(null_A, ka, rank, dw.shape[1])  # (r, in)
                a[null], b[:, null] = fill[null], 0.0
        out[key.replace(LORA_DELTA, LORA_B)] = b.astype(np.float32)
        out[ka] = a.astype(np.float32)
    return out


def _null_rows(null_A: ParamsLike, key: str, rank: int, width: int) -> Float64Array:  # noqa: N803
    if key not in null_A:
        raise ValueError(f"null_A lacks {key!r}; pass every pair's initial lora_A")
    rows = np.asarray(null_A[key], np.float64)
    if rows.ndim != 2 or rows.shape[0] < rank or rows.shape[1] != width:
        raise ValueError(
            f"null_A[{key!r}] has shape {rows.shape}, need (>= {rank}, {width})"
        )
    return rows[:rank]
