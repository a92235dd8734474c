"""Aggregation of soft prompts whose lengths differ across clients.

Soft prompts (Lester et al. 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning") are one (L, d) array under ``key``. Clients with less memory
train shorter prompts. The rule here is *nested prefixes*, the prompt analogue of
HetLoRA's nested ranks (Cho et al. 2024, Fig. 2): the server keeps a global
prompt P of length L_max and client k, with length L_k <= L_max, holds positions
``0 .. L_k - 1`` (:func:`truncate_prompt`). Aggregation averages each position
over the clients that hold it, with their weights renormalised::

    P'[j] = Σ_{k: L_k > j} w_k P_k[j] / Σ_{k: L_k > j} w_k   if that sum > 0
    P'[j] = P[j]                                             otherwise     (1)

Every other key is averaged over all clients with the weights w (FedAvg,
McMahan et al. 2017, Algorithm 1). Inputs are client *states*, not deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.mean import ParamsLike, check_weights, weighted_mean
from fedpeft.types import Params, check_params_like


def _global_prompt(global_state: ParamsLike, key: str) -> npt.NDArray[np.float64]:
    """The global prompt as float64 (L_max, d), checked to be a 2-D array."""
    if key not in global_state:
        raise ValueError(
            f"global state has no prompt key {key!r} (keys: {sorted(global_state)}); "
            "pass key= the name of the soft prompt tensor"
        )
    prompt = np.asarray(global_state[key], np.float64)
    if prompt.ndim != 2 or prompt.shape[0] < 1:
        raise ValueError(
            f"prompt {key!r} must have shape (L, d) with L >= 1, got {prompt.shape}"
        )
    return prompt


def truncate_prompt(
    global_state: ParamsLike, length: int, key: str = "prompt"
) -> Params:
    """A client's state: the first ``length`` positions of the global prompt.

    Other keys are copied unchanged (float32).

    Raises:
        ValueError: if ``key`` is missing or ``length`` is outside [1, L_max].
    """
    l_max = _global_prompt(global_state, key).shape[0]
    if not 1 <= length <= l_max:
        raise ValueError(f"prompt length must be in [1, {l_max}], got {length}")
    out = {name: np.array(v, dtype=np.float32) for name, v in global_state.items()}
    out[key] = out[key][:length].copy()  # (length, d)
    return out


def _check_client(
    i: int, state: ParamsLike, global_state: ParamsLike, key: str
) -> None:
    """State i must hold a finite (L_k, d) prompt with L_k <= L_max and match the
    global state's other keys and shapes."""
    l_max, dim = np.shape(global_state[key])
    rest = {k: v for k, v in global_state.items() if k != key}
    check_params_like(rest, {k: v for k, v in state.items() if k != key}, f"state {i}")
    if key not in state:
        raise ValueError(f"state {i} lacks the prompt key {key!r}")
    shape = np.shape(state[key])
    if len(shape) != 2 or shape[1] != dim or not 1 <= shape[0] <= l_max:
        raise ValueError(
            f"state {i} prompt has shape {shape}, expected (L_k, {dim}) with "
            f"1 <= L_k <= {l_max} (the global length)"
        )
    if not np.all(np.isfinite(state[key])):
        raise ValueError(f"state {i} prompt contains NaN or infinite values")


def aggregate_prompts(
    states: Sequence[ParamsLike],
    weights: npt.ArrayLike,
    global_state: ParamsLike,
    key: str = "prompt",
) -> Params:
    """Nested-prefix aggregation of eq. (1) (module docstring).

    Args:
        states: K client states; prompt (L_k, d), other keys as ``global_state``.
        weights: K non-negative finite weights with a positive sum (e.g. n_k).
        global_state: Current global state; its prompt (L_max, d) fixes the
            length and supplies positions no weighted client holds.
        key: Name of the soft prompt tensor.

    Returns:
        New global state (float32) with the prompt at length L_max.

    Raises:
        ValueError: for no states, bad weights, a prompt longer than L_max or
            of another width, mismatched other keys, or NaN/inf values.
    """
    prompt = _global_prompt(global_state, key)  # (L_max, d)
    if len(states) == 0:
        raise ValueError("cannot aggregate zero client states; need at least one")
    for i, state in enumerate(states):
        _check_client(i, state, global_state, key)
    w = check_weights(weights, len(states))
    acc = np.zeros_like(prompt)  # (L_max, d)
    mass = np.zeros((prompt.shape[0], 1))  # (L_max, 1)
    for w_k, state in zip(w, states, strict=True):
        length = state[key].shape[0]
        acc[:length] += w_k * np.asarray(state[key], np.float64)
        mass[:length] += w_k
    merged = np.where(mass > 0, acc / np.where(mass > 0, mass, 1.0), prompt)
    out = weighted_mean([{k: v for k, v in s.items() if k != key} for s in states], w)
    out[key] = merged.astype(np.float32)
    return out
