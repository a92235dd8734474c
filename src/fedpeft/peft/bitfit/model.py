"""BitFit (Ben Zaken, Ravfogel & Goldberg 2022, "BitFit: Simple
Parameter-efficient Fine-tuning for Transformer-based Masked Language-models").

Only the backbone's bias terms are trained (optionally only in the top layers).
The adapter owns clones of those biases inside a
:func:`~fedpeft.peft.shared.shared_copy` of the body; every weight matrix stays
shared and frozen. HF peft has no BitFit, so its export is a plain safetensors
file of the bias tensors under the base model's own names (load it with
``model.load_state_dict(tensors, strict=False)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.hooked import HookedAdapterClassifier, bias_shift_hooks
from fedpeft.peft.lora.model import lora_layers
from fedpeft.peft.shared import shared_copy

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


class BitFitClassifier(HookedAdapterClassifier):
    """Backbone with trainable biases + pooling + linear head.

    Args:
        layers: Train the biases of the top ``layers`` transformer layers only
            (0 = every bias, embeddings' LayerNorm included).

    Raises:
        ValueError: for a backbone without bias terms (e.g. Llama).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        layers: int = 0,
        label_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        top = lora_layers(backbone, layers)
        keep = set(top) if top is not None else None

        def is_tuned(name: str, _: nn.Parameter) -> bool:
            if not name.endswith("bias"):
                return False
            if keep is None:
                return True
            found = _LAYER_INDEX.search(name)
            return found is not None and int(found.group(1)) in keep

        self.body = shared_copy(backbone.body, is_tuned)
        if not any(p.requires_grad for p in self.body.parameters()):
            raise ValueError(
                f"backbone {backbone.name!r} has no bias terms to tune: BitFit "
                "needs a model with biases (e.g. BERT); use lora or ia3"
            )

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        tokens = self.body.get_input_embeddings()(batch.input_ids)
        kwargs: dict[str, Any] = {}
        if self.backbone.kind == "decoder":
            kwargs["use_cache"] = False
        out = self.body(
            inputs_embeds=tokens, attention_mask=batch.attention_mask, **kwargs
        )
        return torch.as_tensor(out.last_hidden_state)  # (batch, seq, dim)

    def install_per_example_hooks(
        self, current: Callable[[], Mapping[str, torch.Tensor]]
    ) -> Callable[[], None]:
        """A hook on each tuned linear or layer-norm module swaps the module's
        own bias for example i's: ``y + (b_i − b)`` along the last axis.

        Raises:
            ValueError: for a tuned bias on another kind of module (the
                engine then trains its clients one after another).
        """
        tuned = set(self.trainable_parameters())
        targets = []
        for name, module in self.named_modules():
            key = f"{name}.bias"
            if key not in tuned:
                continue
            if not isinstance(module, nn.Linear | nn.LayerNorm):
                raise ValueError(
                    f"BitFit's per-example forward handles linear and layer-norm "
                    f"biases; {key} is on a {type(module).__name__}"
                )
            targets.append((key, module))
        return bias_shift_hooks(targets, current, channel_dim=-1)
