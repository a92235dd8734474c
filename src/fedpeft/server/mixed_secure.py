"""Mixed-size LoRA merged through a secure sum: every rule written as the sum of
what each client can compute alone.

For a LoRA pair held at rank r_k by client k (its slice of the global pair G at
r_max, HetLoRA truncation), with weight w_k and ΔA_k, ΔB_k its updates, client k
sends in the global r_max layout (zeros where it holds nothing)::

    SA_k = w_k · pad_rows(ΔA_k)                          (r_max, in)
    SB_k = w_k · s(r_k)/s(r_max) · pad_cols(ΔB_k)        (out, r_max)
    c_k  = w_k · [j < r_k]_j                             (r_max,)

and for the dense tensors (the head) ``(n_k/n) ΔP_k`` and ``n_k/n``. With
c = Σ c_k, W = c_0 (every holder holds component 0) and j ranging over the
components some client holds (c_j > 0), the rules of
:class:`~fedpeft.server.mixed_lora.MixedLoraServer` become

* HetLoRA / zero-padded FedAvg: ``A_j = G_A,j · c_j/W + ΣSA_j / W`` and
  ``B_:,j = G_B,:,j · c_j/W + ΣSB_:,j / W`` (padded zeros count, as in
  :func:`~fedpeft.aggregation.hetlora.hetlora_aggregate`), with w_k = n_k/n, or
  (n_k/n)·‖ΔW_k‖ for HetLoRA, the client's own adapter norm;
* FFA-LoRA: A stays frozen and ``B_:,j = G_B,:,j + ΣSB_:,j / c_j`` (each
  column averaged over its holders), w_k = n_k/n.

The server learns the sums, and per pair and rank component the summed weight
c_j (so how many examples, or how much norm-weighted mass, held it), besides
the survivors' ids. FlexLoRA would need every client's dense out×in product and
the per-rank weight totals; it is not offered here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedpeft.aggregation.lora import (
    RankScaling,
    lora_pairs,
    lora_products,
    lora_scaling,
)
from fedpeft.types import Params

DENSE_WEIGHT = "__dense_weight__"
COMPONENTS = "__components__/"
SECURE_RULES = ("hetlora", "fedavg", "ffa")


def _ratio(r_from: int, r_to: int, scaling: RankScaling) -> float:
    return lora_scaling(1.0, r_from, scaling) / lora_scaling(1.0, r_to, scaling)


def client_weight(
    rule: str, local: Params, share: float, scaling: RankScaling
) -> float:
    """w_k: the client's example share, times its adapter norm for HetLoRA."""
    if rule != "hetlora":
        return share
    products = lora_products(local, alpha=1.0, rank_scaling=scaling)
    return share * float(np.sqrt(sum(np.sum(p * p) for p in products.values())))


def contribution(
    rule: str,
    global_layout: Mapping[str, np.ndarray],
    delta: Params,
    weight: float,
    share: float,
    scaling: RankScaling,
) -> Params:
    """What one client adds to the secure sum (module docstring).

    Args:
        rule: ``hetlora``, ``fedavg`` or ``ffa``.
        global_layout: The global state (r_max on every pair): the shapes.
        delta: The client's ΔP on the slice it holds.
        weight: w_k of its LoRA pairs; ``share``: n_k/n of its dense tensors.
    """
    pairs = lora_pairs(global_layout)
    paired = {key for pair in pairs.values() for key in pair}
    out: Params = {
        k: (share * np.asarray(v, np.float64)).astype(np.float32)
        for k, v in delta.items()
        if k not in paired
    }
    out[DENSE_WEIGHT] = np.array([share], np.float32)
    for name, (ka, kb) in pairs.items():
        r_max, width = np.shape(global_layout[ka])
        a = np.zeros((r_max, width))  # (r_max, in)
        b = np.zeros(np.shape(global_layout[kb]))  # (out, r_max)
        c = np.zeros(r_max)  # (r_max,)
        if kb in delta:
            r = int(np.shape(delta[kb])[1])
            if rule != "ffa":
                a[:r] = weight * np.asarray(delta[ka], np.float64)
            b[:, :r] = weight * _ratio(r, r_max, scaling) * delta[kb]
            c[:r] = weight
        if rule != "ffa":
            out[ka] = a.astype(np.float32)
        out[kb] = b.astype(np.float32)
        out[COMPONENTS + name] = c.astype(np.float32)
    return out


def finish(rule: str, params: Params, total: Params) -> Params:
    """The new global state from the secure sum of the contributions."""
    out = dict(params)
    dense_weight = float(total[DENSE_WEIGHT][0])
    pairs = lora_pairs(params)
    paired = {key for pair in pairs.values() for key in pair}
    for key in params:
        if key not in paired and key in total and dense_weight > 0:
            out[key] = (params[key] + total[key] / dense_weight).astype(np.float32)
    for name, (ka, kb) in pairs.items():
        c = np.asarray(total[COMPONENTS + name], np.float64)
        held = c > 0
        if not held.any():
            continue
        b = np.array(params[kb], np.float64)
        if rule == "ffa":
            b[:, held] += total[kb][:, held] / c[held]
        else:
            w = c[0]
            a = np.array(params[ka], np.float64)
            a[held] = a[held] * (c[held, None] / w) + total[ka][held] / w
            b[:, held] = b[:, held] * (c[held] / w) + total[kb][:, held] / w
            out[ka] = a.astype(np.float32)
        out[kb] = b.astype(np.float32)
    return out
