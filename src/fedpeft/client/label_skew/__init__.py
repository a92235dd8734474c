"""Local losses for clients whose label mix differs from the federation's.

Under label skew a client's softmax learns its own class prior: the head's
biases and the features drift toward the classes the client holds, and the
averaged model inherits a tug of war between clients. Each loss here changes
the logits *during local training only* (evaluation uses the plain logits),
as a per-class affine map computed from the client's own class counts n_k,c::

    logits' = scale_c · logits + offset_c

* ``balanced-softmax`` (:mod:`.balanced_softmax`): offset log n_k,c.
* ``logit-calibrated`` (:mod:`.logit_calibration`, FedLC): offset −τ·n_k,c^(−1/4).
* ``restricted-softmax`` (:mod:`.restricted_softmax`, FedRS): scale α for the
  classes the client lacks.

The counts never leave the client, so every loss composes with every strategy,
secure aggregation and client-level DP; record-level DP-SGD refuses them (the
per-example loss would depend on the client's other records).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedpeft.client.label_skew.balanced_softmax import balanced_softmax
from fedpeft.client.label_skew.logit_calibration import logit_calibration
from fedpeft.client.label_skew.restricted_softmax import restricted_softmax
from fedpeft.config import ClientSection

AdjustFn = Callable[[np.ndarray, ClientSection], "tuple[np.ndarray, np.ndarray]"]

LOSSES: dict[str, AdjustFn] = {
    "balanced-softmax": balanced_softmax,
    "logit-calibrated": logit_calibration,
    "restricted-softmax": restricted_softmax,
}
"""Loss name (``client.loss``) → (class counts, settings) → (scale, offset)."""


@dataclass(frozen=True)
class LogitAdjust:
    """A per-class affine map of the logits, ``scale · logits + offset``.

    Attributes:
        scale / offset: ``(C,)`` for one client or ``(K, C)`` stacked for the
            clients of a batched step (rows picked by each example's owner).
    """

    scale: torch.Tensor
    offset: torch.Tensor

    def __call__(
        self, logits: torch.Tensor, owner: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The adjusted logits ``(B, C)`` (float32); ``owner`` ``(B,)`` picks
        each example's client row of a stacked adjustment."""
        scale, offset = self.scale, self.offset
        if owner is not None:
            scale, offset = scale.index_select(0, owner), offset.index_select(0, owner)
        return logits.float() * scale + offset

    @staticmethod
    def stack(
        adjusts: Sequence[LogitAdjust | None], num_classes: int, device: torch.device
    ) -> LogitAdjust | None:
        """One stacked adjustment for a batched step (identity rows for
        clients without one); ``None`` when no client has one."""
        if all(a is None for a in adjusts):
            return None
        ones, zeros = torch.ones(num_classes), torch.zeros(num_classes)
        scale = torch.stack([ones if a is None else a.scale.cpu() for a in adjusts])
        offset = torch.stack([zeros if a is None else a.offset.cpu() for a in adjusts])
        return LogitAdjust(scale.to(device), offset.to(device))


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n_c for c < num_classes, as float64.

    Raises:
        ValueError: if a label is outside ``[0, num_classes)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}] but the head has "
            f"{num_classes} classes"
        )
    return np.bincount(labels, minlength=num_classes).astype(np.float64)


def logit_adjust(
    cfg: ClientSection,
    labels: np.ndarray,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> LogitAdjust | None:
    """The adjustment ``cfg.loss`` makes for a client with ``labels``
    (``None`` for plain cross-entropy).

    Raises:
        ValueError: for an unknown loss name.
    """
    if cfg.loss == "cross-entropy":
        return None
    try:
        fn = LOSSES[cfg.loss]
    except KeyError:
        raise ValueError(
            f"unknown client.loss {cfg.loss!r}; choose cross-entropy or "
            f"{', '.join(sorted(LOSSES))}"
        ) from None
    scale, offset = fn(class_counts(labels, num_classes), cfg)
    return LogitAdjust(
        torch.as_tensor(scale, dtype=torch.float32, device=device),
        torch.as_tensor(offset, dtype=torch.float32, device=device),
    )
