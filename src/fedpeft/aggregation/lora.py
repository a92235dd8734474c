"""Aggregation of LoRA adapters whose ranks differ across clients.

Payload convention (client *states*, HF PEFT naming). A pair is a key holding
``lora_A`` whose ``lora_A`` → ``lora_B`` replacement is also a key::

    A = params["<prefix>lora_A<suffix>"]   # (r, in_features)
    B = params["<prefix>lora_B<suffix>"]   # (out_features, r)
    ΔW = s(r) · B @ A                      # (out_features, in_features)

with ``s(r) = α / r`` (``"standard"``, Hu et al. 2021, eq. 3) or ``α / √r``
(``"rslora"``, Kalajdzievski 2023). The pair's *name* is the A key with
``lora_A`` replaced by ``lora_delta``; :func:`flexlora_aggregate` stores ΔW under
that name. Every other key is *dense* (heads, biases) and is averaged with the
client weights by :func:`fedpeft.aggregation.mean.weighted_mean`.

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


# ---------------------------------------------------------------- HetLoRA


def _adapter_norm(state: ParamsLike, rank_scaling: RankScaling) -> float:
    """``sqrt(Σ_pairs ‖s B A‖²_F)`` with α = 1."""
    products = lora_products(state, alpha=1.0, rank_scaling=rank_scaling)
    return math.sqrt(sum(float(np.sum(p * p)) for p in products.values()))


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
    kept component's effective contribution is unchanged (module docstring).
    Also serves FFA-LoRA's global state.

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


# ---------------------------------------------------------------- FlexLoRA


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


# ---------------------------------------------------------------- FFA-LoRA


def _frozen_reference(
    states: Sequence[ParamsLike], ka: str, frozen: ParamsLike | None, r_max: int
) -> Float64Array:
    """The shared A (r_max, in): ``frozen[ka][:r_max]`` or the largest client's."""
    if frozen is None:
        ref = max(states, key=lambda s: s[ka].shape[0])[ka]
    elif ka not in frozen:
        raise ValueError(f"frozen_A lacks {ka!r}; pass every pair's lora_A tensor")
    else:
        ref = frozen[ka]
    if ref.ndim != 2 or ref.shape[0] < r_max or ref.shape[1] != states[0][ka].shape[1]:
        raise ValueError(
            f"frozen {ka!r} has shape {ref.shape}, need (>= {r_max}, "
            f"{states[0][ka].shape[1]}) to cover every client's rank"
        )
    return np.asarray(ref[:r_max], np.float64)


def ffa_lora_aggregate(
    states: Sequence[ParamsLike],
    weights: npt.ArrayLike,
    frozen_A: ParamsLike | None = None,  # noqa: N803 (the paper's A)
    *,
    rank_scaling: RankScaling = "standard",
) -> Params:
    """FFA-LoRA server step: A stays frozen, only B is averaged.

    Sun et al. 2024 (ICLR, "Improving LoRA in Privacy-preserving Federated
    Learning", §4, eq. 4): with a shared A, ``mean_k(s B_k A) = s · mean_k(B_k) A``
    so averaging B averages the products exactly. Heterogeneous ranks: client k
    holds A[:r_k] and B[:, :r_k]; column i is averaged over its holders::

        B[:, i] = Σ_{k: r_k > i} w_k s(r_k)/s(r_max) B_k[:, i] / Σ_{k: r_k > i} w_k

    (0 where the holders' weights sum to 0). Dense keys are weight-averaged.

    Args:
        states: Client states; A_k must equal the frozen A's first r_k rows.
        weights: One weight per client (e.g. n_k).
        frozen_A: Mapping holding each pair's initial lora_A (>= r_max rows);
            other keys are ignored. None: the largest-rank client's A.
        rank_scaling: Scaling convention for the column rescale.

    Returns:
        The global state at r_max (A = frozen A[:r_max]); see
        :func:`hetlora_truncate`.

    Raises:
        ValueError: if a client's A differs from the frozen A where they overlap.
    """
    pairs = _check_states(states)
    w = _normalised(weights, len(states))
    out = _dense_mean(states, pairs, w)
    for ka, kb in pairs.values():
        r_max = max(s[ka].shape[0] for s in states)
        ref = _frozen_reference(states, ka, frozen_A, r_max)  # (r_max, in)
        b = np.zeros((states[0][kb].shape[0], r_max))  # (out, r_max)
        mass = np.zeros(r_max)  # (r_max,)
        for k, (w_k, s) in enumerate(zip(w, states, strict=True)):
            r = s[ka].shape[0]
            if not np.array_equal(s[ka], ref[:r]):
                gap = float(np.max(np.abs(s[ka] - ref[:r])))
                raise ValueError(
                    f"state {k} {ka!r} differs from the frozen A (max |diff| = "
                    f"{gap:.3g}); FFA-LoRA clients must keep A at its shared seed"
                )
            b[:, :r] += (
                w_k * _ratio(r, r_max, rank_scaling) * np.asarray(s[kb], np.float64)
            )
            mass[:r] += w_k
        b = np.divide(b, mass, out=np.zeros_like(b), where=mass > 0)
        out[ka], out[kb] = ref.astype(np.float32), b.astype(np.float32)
    return out
