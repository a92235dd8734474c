"""Adapters for a CNN backbone (:class:`~fedpeft.models.vision.VisionBackbone`)
and the head-only probe.

* :class:`VisualPromptClassifier`: visual prompting's padding prompt (Bahng,
  Jahanian, Sankaranarayanan & Isola 2022, "Exploring Visual Prompts for
  Adapting Large-Scale Models"): a learned ``(3, S, S)`` frame of width
  ``pad`` added to the border of every normalised input image; the network
  is untouched.
* :class:`CnnBitFitClassifier`: BitFit on a CNN. Its convolutions have no
  bias, so the biases are the batch norms' shifts (β), one per channel.
* :class:`CnnLoraClassifier`: LoRA on the 1×1 convolutions (the expand and
  project convolutions of every block and the head convolution; a 1×1
  convolution is a linear map per pixel): ``W + (α/r)·B·A`` with ``A`` random
  and ``B`` zero, optionally only in the top ``layers`` blocks.
* :class:`CnnFullClassifier`: every network weight trains (the baseline).
* :class:`HeadOnlyClassifier`: only the head (any backbone).

The network adapters train their own tensors inside a
:func:`~fedpeft.peft.shared.shared_copy` of the frozen network, so the
backbone every adapter shares is never modified. The batch norms stay in
eval mode (ImageNet statistics), which keeps clients deterministic and
small batches harmless.

Every adapter but full fine-tuning has a per-example forward
(:meth:`~fedpeft.peft.base.AdapterClassifier.per_example_logits`: example i
computes with its own copy of the trainable tensors), so images get what text
gets from it: client-batched training and record-level DP-SGD. The head and
the visual prompt take each example's tensors directly; BitFit adds example
i's shift after each tuned batch norm and LoRA computes example i's low-rank
path, through :class:`~fedpeft.peft.hooked.HookedForward` (safe on several
threads).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.models.vision import VisionBackbone, pooled_features
from fedpeft.peft.base import AdapterClassifier
from fedpeft.peft.hooked import HookedAdapterClassifier, bias_shift_hooks
from fedpeft.peft.shared import shared_copy

Tensors = Mapping[str, torch.Tensor]

ONE_BY_ONE = ("_expand_conv", "_project_conv", "_conv_head")


def _vision(backbone: Backbone, method: str) -> VisionBackbone:
    if not isinstance(backbone, VisionBackbone):
        raise ValueError(
            f"peft.method = {method!r} needs a vision backbone (efficientnet-lite0), "
            f"not {backbone.name!r}"
        )
    return backbone


class HeadOnlyClassifier(AdapterClassifier):
    """A linear head on the frozen backbone's pooled features (any backbone)."""

    def per_example_logits(self, batch: Batch, params: Tensors) -> torch.Tensor:
        return self.per_example_head(self.features(batch), params)


class VisualPromptClassifier(AdapterClassifier):
    """A learned border added to every image; network and pooling unchanged.

    Args:
        pad: Width in pixels of the border at the backbone's input size.
    """

    frame: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        pad: int = 4,
        label_names: tuple[str, ...] = (),
    ) -> None:
        vision = _vision(backbone, "visual-prompt")
        super().__init__(backbone, num_classes, generator, label_names)
        size = vision.image_size
        if 2 * pad >= size:
            raise ValueError(f"pad={pad} leaves no image inside {size}×{size}")
        frame = torch.ones(1, 1, size, size)
        frame[..., pad:-pad, pad:-pad] = 0.0
        self.register_buffer("frame", frame, persistent=False)
        self.prompt = nn.Parameter(torch.zeros(1, 3, size, size))

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        return self._prompted(batch, self.prompt)

    def per_example_logits(self, batch: Batch, params: Tensors) -> torch.Tensor:
        prompts = params["prompt"][:, 0]  # (B, 3, S, S): example i's own
        features = self.backbone.pool(
            self._prompted(batch, prompts), batch.attention_mask
        )
        return self.per_example_head(features, params)

    def _prompted(self, batch: Batch, prompt: torch.Tensor) -> torch.Tensor:
        """Features ``(B, 1, d)`` of the images with ``prompt``'s frame added
        (one prompt ``(1, 3, S, S)`` or one per image ``(B, 3, S, S)``)."""
        images = self.backbone.embed(batch.input_ids)
        return self.backbone.encode(images + self.frame * prompt, batch.attention_mask)


class _CnnBodyClassifier(AdapterClassifier):
    """Features from this adapter's own copy of the network (``self.body``)."""

    body: nn.Module

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        return pooled_features(self.body, self.backbone.embed(batch.input_ids))


class CnnBitFitClassifier(_CnnBodyClassifier, HookedAdapterClassifier):
    """The batch norms' shifts (β) train; every weight stays shared and frozen.

    Args:
        layers: Only the top ``layers`` blocks' shifts (and the head's batch
            norm) train (0 = every one, the stem's included).
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
        vision = _vision(backbone, "bitfit")
        super().__init__(backbone, num_classes, generator, label_names)
        keep = _top_blocks(vision, layers)
        self.body = shared_copy(
            vision.model,
            lambda name, _: name.endswith(".bias") and _in_blocks(name, keep),
        )

    def install_per_example_hooks(
        self, current: Callable[[], Tensors]
    ) -> Callable[[], None]:
        """A hook on each tuned batch norm adds ``β_i − β`` per channel (in
        eval mode a batch norm is an affine map per channel, so this is the
        batch norm with example i's shift)."""
        tuned = set(self.trainable_parameters())
        targets = [
            (f"{name}.bias", module)
            for name, module in self.body.named_modules(prefix="body")
            if f"{name}.bias" in tuned
        ]
        assert all(isinstance(m, nn.BatchNorm2d) for _, m in targets)  # CNN biases
        return bias_shift_hooks(targets, current, channel_dim=1)


class CnnFullClassifier(_CnnBodyClassifier):
    """Every network weight trains (a private copy; the baseline)."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        label_names: tuple[str, ...] = (),
    ) -> None:
        vision = _vision(backbone, "full")
        super().__init__(backbone, num_classes, generator, label_names)
        self.body = shared_copy(vision.model, lambda name, _: True)


class LoraConv1x1(nn.Module):
    """A frozen 1×1 convolution plus a trainable low-rank path
    ``(α/r)·B(A(x))`` (``A``: Kaiming-uniform as in LoRA, ``B``: zero).

    While :attr:`per_example` is set (a per-example session), example i's
    path uses the factors ``(A_i, B_i)`` it returns instead.
    """

    per_example: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None

    def __init__(
        self, conv: nn.Conv2d, rank: int, scale: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.conv = conv
        self.lora_A = nn.Parameter(torch.empty(rank, conv.in_channels))
        self.lora_B = nn.Parameter(torch.zeros(conv.out_channels, rank))
        bound = 1.0 / math.sqrt(conv.in_channels)  # kaiming_uniform_(a=√5)
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen: torch.Tensor = self.conv(x)
        if self.per_example is None:
            low = torch.einsum("ri,bihw->brhw", self.lora_A, x)
            return frozen + self.scale * torch.einsum("or,brhw->bohw", self.lora_B, low)
        a, b = self.per_example()  # (B, r, in), (B, out, r)
        low = torch.einsum("bri,bihw->brhw", a.to(x.dtype), x)
        return frozen + self.scale * torch.einsum("bor,brhw->bohw", b.to(x.dtype), low)


class CnnLoraClassifier(_CnnBodyClassifier, HookedAdapterClassifier):
    """LoRA on the network's 1×1 convolutions.

    Args:
        rank / alpha / rank_scaling: As for text LoRA (scale α/r, or α/√r).
        layers: Adapt only the top ``layers`` blocks (0 = all); the head
            convolution is always adapted.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        rank: int = 8,
        alpha: float = 16.0,
        target_modules: tuple[str, ...] = (),
        layers: int = 0,
        rank_scaling: str = "standard",
        label_names: tuple[str, ...] = (),
    ) -> None:
        vision = _vision(backbone, "lora")
        super().__init__(backbone, num_classes, generator, label_names)
        targets = tuple(target_modules) or ONE_BY_ONE
        unknown = sorted(set(targets) - set(ONE_BY_ONE))
        if unknown:
            raise ValueError(
                f"peft.target_modules {unknown}: a CNN's LoRA adapts its 1×1 "
                f"convolutions, named {ONE_BY_ONE}"
            )
        scale = alpha / (math.sqrt(rank) if rank_scaling == "rslora" else rank)
        keep = _top_blocks(vision, layers)
        body = shared_copy(vision.model)
        for name, module in list(body.named_modules()):
            short = name.rsplit(".", 1)[-1]
            if short in targets and _in_blocks(name, keep):
                assert isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                parent = (
                    body.get_submodule(name.rsplit(".", 1)[0]) if "." in name else body
                )
                setattr(parent, short, LoraConv1x1(module, rank, scale, generator))
        self.body = body

    def install_per_example_hooks(
        self, current: Callable[[], Tensors]
    ) -> Callable[[], None]:
        """Point every adapted convolution at this thread's ``(A_i, B_i)``."""
        adapted = [
            (name, m) for name, m in self.named_modules() if isinstance(m, LoraConv1x1)
        ]
        for name, module in adapted:

            def factors(a: str = f"{name}.lora_A", b: str = f"{name}.lora_B") -> Any:
                params = current()
                return params[a], params[b]

            module.per_example = factors

        def remove() -> None:
            for _, module in adapted:
                module.per_example = None

        return remove


def _top_blocks(backbone: VisionBackbone, layers: int) -> set[int] | None:
    """Indices of the top ``layers`` blocks (None: all)."""
    total = backbone.num_layers
    if layers == 0 or layers >= total:
        return None
    return set(range(total - layers, total))


def _in_blocks(name: str, keep: set[int] | None) -> bool:
    """Whether parameter/module ``name`` lies in a kept block (the stem counts
    as block −1, the head after the last block)."""
    if keep is None:
        return True
    if name.startswith("_blocks."):
        return int(name.split(".")[1]) in keep
    return not name.startswith(("_conv_stem", "_bn0"))


def build_bitfit(
    backbone: Backbone, num_classes: int, **options: Any
) -> AdapterClassifier:
    """BitFit on a text transformer, or on a CNN's batch norms."""
    if isinstance(backbone, VisionBackbone):
        return CnnBitFitClassifier(backbone, num_classes, **options)
    from fedpeft.peft.bitfit.model import BitFitClassifier

    return BitFitClassifier(backbone, num_classes, **options)


def build_lora(
    backbone: Backbone, num_classes: int, **options: Any
) -> AdapterClassifier:
    """LoRA through HF peft on a transformer, or on a CNN's 1×1 convolutions."""
    if isinstance(backbone, VisionBackbone):
        return CnnLoraClassifier(backbone, num_classes, **options)
    from fedpeft.peft.lora.model import LoraClassifier

    return LoraClassifier(backbone, num_classes, **options)


def build_full(
    backbone: Backbone, num_classes: int, **options: Any
) -> AdapterClassifier:
    """Full fine-tuning of a transformer or a CNN."""
    if isinstance(backbone, VisionBackbone):
        return CnnFullClassifier(backbone, num_classes, **options)
    from fedpeft.peft.full.model import FullFineTuneClassifier

    return FullFineTuneClassifier(backbone, num_classes, **options)
