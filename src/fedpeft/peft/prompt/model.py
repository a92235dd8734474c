"""Soft prompt tuning: L trainable vectors prepended to the input embeddings.

Lester, Al-Rfou & Constant (2021), "The Power of Scale for Parameter-Efficient
Prompt Tuning". For an encoder we mean-pool the final states of the real tokens
(prompt positions excluded) and classify with a trainable linear head; prompt
and head together are the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier
from fedpeft.peft.shared import shared_copy

PROMPT_INITS = ("vocab", "random", "labels")


class SoftPromptClassifier(AdapterClassifier):
    """Soft prompt ``(L, dim)`` + mean pooling + linear head.

    Args:
        backbone: The shared frozen encoder.
        num_classes: Number of classes of the head.
        generator: Draws the prompt initialisation.
        prompt_length: L, the number of virtual tokens.
        prompt_init: ``"vocab"`` (embeddings of random vocabulary tokens),
            ``"random"`` (normal with the embedding matrix's std) or ``"labels"``
            (embeddings of the label names' tokens, cycled to fill L).
        label_names: Needed by ``prompt_init="labels"``.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        prompt_length: int = 20,
        prompt_init: str = "vocab",
        label_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        if prompt_length < 1:
            raise ValueError(f"prompt_length={prompt_length}: must be >= 1")
        self.prompt = nn.Parameter(
            self._init_prompt(prompt_length, prompt_init, label_names, generator)
        )

    def _init_prompt(
        self,
        length: int,
        init: str,
        label_names: tuple[str, ...],
        generator: torch.Generator,
    ) -> torch.Tensor:
        table = self.backbone.word_embeddings.weight.detach()  # (vocab, dim)
        if init == "random":
            std = float(table.std())
            return torch.randn(length, table.shape[1], generator=generator) * std
        if init == "vocab":
            # Skip the special/unused ids at the start of BERT-style vocabularies.
            low = min(1000, table.shape[0] // 4)
            drawn = torch.randint(low, table.shape[0], (length,), generator=generator)
            return table[drawn].clone()
        if init == "labels":
            tokenizer = self.backbone.tokenizer
            ids = [
                int(i)
                for name in label_names
                for i in tokenizer(name, add_special_tokens=False)["input_ids"]
            ]
            if not ids:
                raise ValueError(
                    "prompt_init='labels' needs label names that tokenize "
                    "to at least one token"
                )
            cycled = torch.tensor([ids[k % len(ids)] for k in range(length)])
            return table[cycled].clone()
        raise ValueError(
            f"prompt_init={init!r}: choose one of {', '.join(PROMPT_INITS)}"
        )

    @property
    def virtual_tokens(self) -> int:
        """L: the positions the prompt adds before the input (exports drop them)."""
        return int(self.prompt.shape[0])

    def peft_model(self) -> Any:
        """peft prompt tuning (feature extraction) with this prompt."""
        return prompt_tuning_model(self.backbone, self.prompt)

    def features(self, batch: Batch) -> torch.Tensor:
        prompt = self.prompt.expand(len(batch), -1, -1)  # (batch, L, dim)
        return self._features_with(batch, prompt)

    def per_example_logits(
        self, batch: Batch, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        features = self._features_with(batch, params["prompt"])  # (batch, dim)
        return self.per_example_head(features, params)

    def _features_with(self, batch: Batch, prompt: torch.Tensor) -> torch.Tensor:
        """Mean-pooled real-token states with ``prompt`` ``(batch, L, dim)``."""
        bsz, length = len(batch), prompt.shape[1]
        tokens = self.backbone.embed(batch.input_ids)  # (batch, seq, dim)
        inputs = torch.cat([prompt.to(tokens.dtype), tokens], dim=1)  # (b, L+seq, d)
        ones = batch.attention_mask.new_ones(bsz, length)
        mask = torch.cat([ones, batch.attention_mask], dim=1)
        hidden = self.backbone.encode(inputs, mask)  # (batch, L + seq, dim)
        return self.backbone.pool(hidden[:, length:], batch.attention_mask)


def prompt_tuning_model(backbone: Backbone, prompt: torch.Tensor) -> Any:
    """peft prompt tuning (feature extraction) of ``backbone``'s body with the
    virtual-token table ``prompt`` ``(L, dim)``."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(
        task_type="FEATURE_EXTRACTION",
        num_virtual_tokens=prompt.shape[0],
        token_dim=backbone.hidden_size,
        num_transformer_submodules=1,
        num_attention_heads=backbone.num_heads,
        num_layers=backbone.num_layers,
    )
    with torch.random.fork_rng(devices=[]):
        model = get_peft_model(shared_copy(backbone.body), config)
    with torch.no_grad():
        _prompt_table(model).copy_(prompt)
    return model


def _prompt_table(model: Any) -> torch.Tensor:
    """The virtual-token table of a peft prompt-learning model."""
    table: torch.Tensor = model.prompt_encoder["default"].embedding.weight
    return table
