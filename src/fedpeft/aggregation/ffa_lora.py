"""FFA-LoRA: A frozen at its shared seed, only B averaged (mixed ranks allowed).

Sun et al. 2024 (ICLR), "Improving LoRA in Privacy-preserving Federated
Learning". Payload and scaling conventions: :mod:`fedpeft.aggregation.lora`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.lora import (
    RankScaling,
    _check_states,
    _dense_mean,
    _normalised,
    _ratio,
)
from fedpeft.types import Float64Array, Params, ParamsLike


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
        :func:`~fedpeft.aggregation.hetlora.hetlora_truncate`.

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
