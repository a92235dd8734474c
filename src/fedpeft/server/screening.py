"""Which client updates the server accepts: a bad update is dropped, never the run.

An update is rejected, with the reason recorded, when its tensors do not match
what the client was sent (keys, shapes), when it holds NaN or infinite values,
when its example count is negative, or when its L2 norm exceeds
``norm_ratio`` times the round's median norm (a client that sends 1e30 would
otherwise poison the global model). The median is the lower median, so with two
clients one huge update cannot hide behind the mean of the pair.

Under secure aggregation the server cannot see a single update; there the
quantizer's per-coordinate range bounds what one client can add, and with
client-level DP the clipping bound C does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedpeft.aggregation import global_norm
from fedpeft.types import ClientUpdate, Params, check_params_like


@dataclass(frozen=True)
class Screened:
    """The round's accepted updates, the rejected ones with their reasons, and
    the largest valid norm over the lower median (``nan`` for < 2 updates)."""

    accepted: list[ClientUpdate]
    rejected: dict[int, str]
    max_norm_ratio: float = float("nan")


def screen_updates(
    updates: Sequence[ClientUpdate],
    references: Mapping[int, Params],
    norm_ratio: float,
) -> Screened:
    """Validate each update against what its client was sent, then bound norms.

    Args:
        updates: The round's replies (one per client that answered).
        references: Per client id, the state it was sent (the expected layout).
        norm_ratio: Reject norms above ``norm_ratio ×`` the lower median of the
            round's valid norms; 0 turns the bound off.

    Returns:
        The accepted updates (in the given order) and, per rejected client, why.
    """
    rejected: dict[int, str] = {}
    valid: list[ClientUpdate] = []
    valid_norms: list[float] = []
    for u in updates:
        try:
            check_params_like(
                references[u.client_id], u.delta, what=f"client {u.client_id}'s update"
            )
            if not (isinstance(u.num_examples, int) and u.num_examples >= 0):
                raise ValueError(
                    f"client {u.client_id} reports num_examples={u.num_examples!r}; "
                    "it must be an integer >= 0"
                )
            norm = global_norm(u.delta)
            if not math.isfinite(norm):
                raise ValueError(
                    f"client {u.client_id}'s update norm overflows (values near "
                    "the float32 limit)"
                )
        except ValueError as err:
            rejected[u.client_id] = str(err)
            continue
        valid.append(u)
        valid_norms.append(norm)
    if len(valid) < 2:
        return Screened(valid, rejected)
    norms = np.array(valid_norms)
    median = float(np.sort(norms)[(len(norms) - 1) // 2])  # lower median
    ratio = float(norms.max() / median) if median > 0 else float("nan")
    if norm_ratio <= 0:
        return Screened(valid, rejected, ratio)
    accepted = []
    for u, norm in zip(valid, norms, strict=True):
        if median > 0 and norm > norm_ratio * median:
            rejected[u.client_id] = (
                f"client {u.client_id}'s update norm {norm:.3g} is more than "
                f"{norm_ratio:g}× the round's median {median:.3g} "
                "(federation.update_norm_ratio)"
            )
        else:
            accepted.append(u)
    return Screened(accepted, rejected, ratio)
