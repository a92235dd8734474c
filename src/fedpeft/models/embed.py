"""Pooled sequence embeddings from the frozen backbone (mean or last token)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset


def map_pooled(
    features: Callable[[Batch], torch.Tensor],
    data: TokenizedDataset,
    dim: int,
    batch_size: int = 128,
    precision: str = "auto",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``features(batch)`` for every example, ``(n, dim)`` float32 on the CPU
    in the data set's order, computed on ``device`` under inference mode on
    length-sorted batches."""
    out = torch.empty(len(data), dim)
    with torch.inference_mode(), autocast(precision, device):
        for idx, batch in data.length_sorted_batches(batch_size, device):
            out[torch.from_numpy(idx)] = features(batch).float().cpu()
    return out.clone()  # a normal tensor, usable under autograd


def embed_dataset(
    backbone: Backbone,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "auto",
) -> torch.Tensor:
    """Pooled final states ``(n, dim)`` (float32), in the data set's order:
    mean-pooled for encoders, the last real token for decoders
    (:meth:`Backbone.pool`)."""

    def pooled(batch: Batch) -> torch.Tensor:
        embeds = backbone.embed(batch.input_ids)  # (batch, seq, dim)
        hidden = backbone.encode(embeds, batch.attention_mask)  # (batch, seq, dim)
        return backbone.pool(hidden, batch.attention_mask)  # (batch, dim)

    return map_pooled(
        pooled, data, backbone.hidden_size, batch_size, precision, backbone.device
    )
