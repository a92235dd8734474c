"""Methods that HF peft injects into the backbone's layers (LoRA, IA3).

The tuner layers go into a :func:`~fedpeft.peft.shared.shared_copy` of the
backbone's body, so the frozen weights stay shared with every other adapter
and only the tuner's tensors (plus the head) are trainable and sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.hooked import HookedAdapterClassifier
from fedpeft.peft.shared import shared_copy


class InjectedTunerClassifier(HookedAdapterClassifier):
    """Backbone body with peft tuner layers + pooling + linear head.

    Args:
        backbone: The shared frozen backbone.
        num_classes: Number of classes of the head.
        generator: Seeds the head (subclasses seed their tuner weights).
        peft_config: A peft ``PeftConfig`` (e.g. ``LoraConfig``).
        label_names: Verbalizer head for decoders.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        peft_config: Any,
        label_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        from peft import inject_adapter_in_model

        self.peft_config = peft_config
        body = shared_copy(backbone.body)
        # peft draws its own init from the global RNG; fork it so we neither
        # depend on nor disturb it, then re-initialise from ``generator``.
        with torch.random.fork_rng(devices=[]):
            self.body = inject_adapter_in_model(peft_config, body)

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        tokens = self.backbone.embed(batch.input_ids)  # (batch, seq, dim)
        kwargs: dict[str, Any] = {}
        if self.backbone.kind == "decoder":
            kwargs["use_cache"] = False
        out = self.body(
            inputs_embeds=tokens, attention_mask=batch.attention_mask, **kwargs
        )
        return torch.as_tensor(out.last_hidden_state)  # (batch, seq, dim)

    def peft_model(self) -> Any:
        """A ``PeftModel`` over a fresh view of the body holding our tuner
        tensors (names match: peft's ``base_model.model.<name>``)."""
        from peft import get_peft_model

        with torch.random.fork_rng(devices=[]):
            model = get_peft_model(shared_copy(self.backbone.body), self.peft_config)
        ours = self.trainable_parameters()
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if tensor.requires_grad:
                    tensor.copy_(ours[name.replace("base_model.model.", "body.", 1)])
        return model

    def bypass_tuners(
        self, layer_type: type, hook: Callable[[str, Any], Any]
    ) -> Callable[[], None]:
        """Turn off peft's own tuner in every ``layer_type`` module and install
        ``hook(name, module)`` (returning its handle) on each instead.

        Returns:
            A function that removes the hooks and turns the tuners back on.
        """
        handles: list[Any] = []
        layers: list[Any] = []  # peft tuner layers (untyped library)
        for name, module in self.named_modules():
            if isinstance(module, layer_type):
                layers.append(module)
                handles.append(hook(name, module))
        for layer in layers:
            layer._disable_adapters = True

        def restore() -> None:
            for handle in handles:
                handle.remove()
            for module in layers:
                module._disable_adapters = False

        return restore
