"""Pooling a sequence of hidden states into one vector per sequence.

Pure tensor functions over ``(batch, seq, dim)`` states and their ``(batch, seq)``
attention mask; :meth:`fedpeft.models.backbone.Backbone.pool` picks one by the
backbone's kind.
"""

from __future__ import annotations

import torch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``(batch, seq, dim)`` over positions where ``mask`` is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last position where ``mask`` is 1, ``(batch, dim)``.

    The pooling for causal decoders. With right padding that is position
    ``mask.sum(1) - 1``; taking the last 1 also holds for left padding. A row
    without real tokens gives position 0.
    """
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)  # (seq,)
    last = (mask.long() * positions).argmax(dim=1)  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
