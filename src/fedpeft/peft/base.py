"""The contract every parameter-efficient method follows.

An :class:`AdapterClassifier` turns a batch into pooled features with the frozen
backbone plus its own trainable pieces, and classifies them with a linear head.
Its trainable state (method parameters + head) is the federated payload,
exchanged as :data:`fedpeft.types.Params`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.config import PEFT_METHODS, PeftConfig, peft_config
from fedpeft.types import Params, check_params_like
from fedpeft.wire import payload_bytes

__all__ = ["PEFT_METHODS", "AdapterClassifier", "build_adapter"]


class AdapterClassifier(nn.Module):
    """Base class: frozen backbone + method-specific trainable state + linear head.

    The backbone is held outside the module tree, so ``parameters()`` and
    ``state_dict()`` cover only what the method trains. Subclasses implement
    :meth:`features`.
    """

    head_prefix = "head."
    method_config: PeftConfig | None = None
    """The options it was built with (:func:`build_adapter` sets them)."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        generator: torch.Generator,
        label_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: need at least 2 classes")
        object.__setattr__(self, "backbone", backbone)  # shared, not a submodule
        self.backbone: Backbone
        self.head = nn.Linear(backbone.hidden_size, num_classes)
        with torch.no_grad():  # seeded init: never the global RNG
            self.head.weight.normal_(0.0, 0.02, generator=generator)
            self.head.bias.zero_()
            if backbone.kind == "decoder" and len(label_names) == num_classes:
                # Verbalizer head: the LM's output rows of each label word, so
                # the untrained classifier is zero-shot next-token scoring of
                # the label words at the last position.
                ids = backbone.verbalizer_ids(label_names)
                self.head.weight.copy_(backbone.lm_head_rows(ids))

    @property
    def device(self) -> torch.device:
        """Where it computes: the backbone's device (batches go there)."""
        return self.backbone.device

    def features(self, batch: Batch) -> torch.Tensor:
        """Pooled features ``(batch, dim)`` fed to the head.

        The default runs the frozen backbone unchanged (the linear-probe
        features); methods override it or :meth:`hidden_states`.
        """
        return self.backbone.pool(self.hidden_states(batch), batch.attention_mask)

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states ``(batch, seq, dim)`` of the real tokens."""
        tokens = self.backbone.embed(batch.input_ids)  # (batch, seq, dim)
        return self.backbone.encode(tokens, batch.attention_mask)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Class logits ``(batch, num_classes)`` in float32."""
        logits: torch.Tensor = self.head(self.features(batch).float())
        return logits

    def per_example_logits(
        self, batch: Batch, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Logits ``(batch, classes)`` where example i uses its own copy
        ``params[name][i]`` of every trainable tensor.

        Summing the per-example losses and differentiating w.r.t. the copies gives
        every example's gradient in one backward pass (record-level DP-SGD).

        Raises:
            NotImplementedError: for methods that do not provide it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no per-example forward; record-level "
            "DP-SGD and client batching need a method with one (every method but "
            "full)"
        )

    def stack_states(self, states: Sequence[Params]) -> dict[str, torch.Tensor]:
        """The trainable tensors of several states as ``(K, ...)`` fp32 tensors
        on :attr:`device`, the stacks :meth:`per_example_logits` gathers each
        example's copy from."""
        return {
            n: torch.from_numpy(np.stack([np.asarray(s[n]) for s in states]))
            .float()
            .to(self.device)
            for n in self.trainable_parameters()
        }

    def per_example_session(self) -> contextlib.AbstractContextManager[None]:
        """Context for many :meth:`per_example_logits` calls, which may then
        run on several threads at once. Methods that hook shared modules keep
        their hooks installed for the whole session (only per-example calls
        may run inside it); for the others it does nothing."""
        return contextlib.nullcontext()

    def per_example_head(
        self, features: torch.Tensor, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The head with per-example weights: ``(B, C, d)·(B, d) + (B, C)``."""
        weight, bias = params["head.weight"], params["head.bias"]
        return torch.einsum("bcd,bd->bc", weight, features.float()) + bias

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The payload's tensors by name: every parameter with ``requires_grad``.

        Methods that wrap a copy of the backbone (LoRA, IA3, BitFit) hold the
        frozen backbone weights as submodule parameters too; those are shared
        with the backbone, never trained and never sent.
        """
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def body_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters other than the head's."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [
            p for p in self.trainable_parameters().values() if id(p) not in head_ids
        ]

    def trainable_state(self) -> Params:
        """Copy of the trainable tensors as float32 numpy arrays (the payload)."""
        return {
            name: t.detach().to(torch.float32).cpu().numpy().copy()
            for name, t in self.trainable_parameters().items()
        }

    def load_trainable_state(self, params: Mapping[str, np.ndarray]) -> None:
        """Load a payload produced by :meth:`trainable_state`.

        Raises:
            ValueError: if keys, shapes or values do not fit this adapter.
        """
        check_params_like(self.trainable_state_like(), params, what="adapter state")
        with torch.no_grad():
            for name, tensor in self.trainable_parameters().items():
                tensor.copy_(torch.from_numpy(np.asarray(params[name])))  # to device

    def trainable_state_like(self) -> dict[str, np.ndarray]:
        """Zero-size stand-ins with the payload's keys and shapes (for validation)."""
        return {
            n: np.empty(tuple(t.shape), np.float32)
            for n, t in self.trainable_parameters().items()
        }

    def peft_model(self) -> Any | None:
        """This adapter as an HF ``peft.PeftModel`` over a copy of the backbone
        body (for export), or ``None`` for methods peft does not implement."""
        return None

    def num_trainable(self) -> int:
        """Number of trainable scalars (method + head)."""
        return sum(t.numel() for t in self.trainable_parameters().values())

    def payload_bytes(self) -> int:
        """Size of the serialized trainable state, as it travels each way."""
        return payload_bytes(self.trainable_state())


def build_adapter(
    peft: PeftConfig | str,
    backbone: Backbone,
    num_classes: int,
    generator: torch.Generator,
    label_names: tuple[str, ...] = (),
    **options: Any,
) -> AdapterClassifier:
    """Build a registered method's adapter on ``backbone``, on its device.

    Args:
        peft: The method's options, or its registered name (then ``options``
            are validated into its config class, defaults for the rest).
        label_names: The class names (a decoder's verbalizer head; prompt's
            ``"labels"`` init).
        **options: Options that replace ``peft``'s (validated).

    Raises:
        ConfigError: for an unknown method or a bad or foreign option (the
            message lists the method's options).
    """
    if isinstance(peft, str):
        peft = peft_config(peft, **options)
    elif options:
        peft = peft.replace(**options)
    factory = PEFT_METHODS.factory(peft.method)
    adapter = factory(
        backbone,
        num_classes,
        generator=generator,
        label_names=label_names,
        **peft.adapter_options(),
    )
    adapter.method_config = peft  # what its features depend on besides weights
    return adapter.to(backbone.device)
