"""A prompt ``A·z`` from a low-dimensional z (Sun et al. 2022, BBT).

The prompt of L vectors is ``(A·z).view(L, dim)``; A is a bias-free random
projection ``d → L·dim`` with entries N(0, (alpha·s/√d)²), s the standard
deviation of the backbone's word embeddings, so that a z ~ N(0, I) gives
prompt entries on the embeddings' scale. A is drawn from its own generator
seeded by ``projection_seed``: the server and every client regenerate the same
A and only z (d floats) and the head travel. For an encoder the prompt is
prepended to the input embeddings and the real tokens' states are mean-pooled
into a linear head, as in soft prompt tuning. In verbalizer mode the head is
a decoder's label-word rows of its LM head, derived from the backbone on every
side: it is frozen, and z alone is the adapter's state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier

_CHUNK = 1 << 22  # entries drawn at a time (bounded temporary memory)


def projection(seed: int, intrinsic_dim: int, out_features: int) -> torch.Tensor:
    """Unscaled A ``(out_features, intrinsic_dim)`` fp32, N(0, 1) from ``seed``
    alone (the same on every machine and device: drawn on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.empty(out_features * intrinsic_dim)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        part.copy_(torch.randn(part.numel(), generator=gen))
    return flat.view(out_features, intrinsic_dim)


def project(
    z: torch.Tensor, a: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """``scale · A·z`` for a population ``z`` ``(P, d)``: ``(P, L·dim)``."""
    return (z.float() @ a.T) * scale


class BlackBoxPromptClassifier(AdapterClassifier):
    """Prompt ``A·z`` + mean pooling + linear head; z and the head are the
    payload (z is searched without gradients by :mod:`fedpeft.blackbox`).

    Args:
        backbone: The shared frozen model.
        num_classes: Number of classes of the head.
        generator: Seeds the head (z starts at 0, the search's centre).
        prompt_length: L.
        intrinsic_dim: d.
        projection_seed: Seed of A (shared by the whole federation).
        alpha: Scale of A relative to the word embeddings.
        label_names: A decoder's verbalizer head.
        verbalizer: Freeze the head (the label words' LM rows): z alone is
            the state.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        prompt_length: int = 50,
        intrinsic_dim: int = 500,
        projection_seed: int = 0,
        alpha: float = 1.0,
        label_names: tuple[str, ...] = (),
        verbalizer: bool = False,
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        if verbalizer:
            if backbone.kind != "decoder" or len(label_names) != num_classes:
                raise ValueError(
                    "peft.head = 'verbalizer' scores a decoder's label words, one "
                    f"per class; the backbone is of kind {backbone.kind!r} with "
                    f"{len(label_names)} label names for {num_classes} classes "
                    "(use peft.head = 'local')"
                )
            self.head.requires_grad_(False)
        self.prompt_length = prompt_length
        self.z = nn.Parameter(torch.zeros(intrinsic_dim))
        table = backbone.word_embeddings.weight.detach()
        scale = alpha * table.float().std() / math.sqrt(intrinsic_dim)  # 0-d
        a = projection(projection_seed, intrinsic_dim, prompt_length * table.shape[1])
        self.register_buffer("projection", a, persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def prompts(self, z: torch.Tensor) -> torch.Tensor:
        """Prompts ``(P, L, dim)`` of a population ``z`` ``(P, d)``."""
        a, scale = cast(torch.Tensor, self.projection), cast(torch.Tensor, self.scale)
        return project(z, a, scale).view(len(z), self.prompt_length, -1)

    @property
    def virtual_tokens(self) -> int:
        """L: the positions the prompt adds before the input (exports drop them)."""
        return self.prompt_length

    def peft_model(self) -> Any:
        """peft prompt tuning with the materialised prompt ``A·z``: a searched
        black-box prompt exports as a plain soft prompt."""
        from fedpeft.peft.prompt.model import prompt_tuning_model

        with torch.no_grad():
            prompt = self.prompts(self.z.detach()[None])[0]
        return prompt_tuning_model(self.backbone, prompt)

    def features(self, batch: Batch) -> torch.Tensor:
        prompt = self.prompts(self.z[None]).expand(len(batch), -1, -1)
        return self.features_with(batch, prompt)

    def per_example_logits(
        self, batch: Batch, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        features = self.features_with(batch, self.prompts(params["z"]))
        return self.per_example_head(features, params)

    def features_with(self, batch: Batch, prompt: torch.Tensor) -> torch.Tensor:
        """Pooled real-token states with ``prompt`` ``(batch, L, dim)``."""
        bsz, length = len(batch), prompt.shape[1]
        tokens = self.backbone.embed(batch.input_ids)  # (batch, seq, dim)
        inputs = torch.cat([prompt.to(tokens.dtype), tokens], dim=1)
        ones = batch.attention_mask.new_ones(bsz, length)
        mask = torch.cat([ones, batch.attention_mask], dim=1)
        hidden = self.backbone.encode(inputs, mask)  # (batch, L + seq, dim)
        return self.backbone.pool(hidden[:, length:], batch.attention_mask)
