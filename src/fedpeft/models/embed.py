"""Mean-pooled sentence embeddings from the frozen backbone."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``(batch, seq, dim)`` over positions where ``mask`` is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def map_pooled(
    features: Callable[[Batch], torch.Tensor],
    data: TokenizedDataset,
    dim: int,
    batch_size: int = 128,
    precision: str = "bf16",
) -> torch.Tensor:
    """``features(batch)`` for every example, ``(n, dim)`` float32 in the data
    set's order, computed under inference mode on length-sorted batches."""
    out = torch.empty(len(data), dim)
    with torch.inference_mode(), autocast(precision):
        for idx, batch in data.length_sorted_batches(batch_size):
            out[torch.from_numpy(idx)] = features(batch).float()
    return out.clone()  # a normal tensor, usable under autograd


def embed_dataset(
    backbone: Backbone,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "bf16",
) -> torch.Tensor:
    """Mean-pooled final states ``(n, dim)`` (float32), in the data set's order."""

    def pooled(batch: Batch) -> torch.Tensor:
        hidden = backbone.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).last_hidden_state
        return mean_pool(hidden, batch.attention_mask)

    return map_pooled(pooled, data, backbone.hidden_size, batch_size, precision)
