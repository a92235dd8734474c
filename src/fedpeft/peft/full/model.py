"""Full fine-tuning: every backbone weight is trainable and travels each round.

This is the FedAvg full fine-tuning baseline. It owns one private copy of the
backbone (shared by all simulated clients of this method), so the frozen
backbone that PEFT methods share is never modified.
"""

from __future__ import annotations

import copy

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier


class FullFineTuneClassifier(AdapterClassifier):
    """All backbone weights + mean pooling + linear head are trainable."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        label_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        self.encoder = copy.deepcopy(backbone.body)
        self.encoder.requires_grad_(True)
        self.encoder.eval()  # no dropout: keeps clients deterministic and comparable

    def features(self, batch: Batch) -> torch.Tensor:
        out = self.encoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        )
        return self.backbone.pool(out.last_hidden_state, batch.attention_mask)
