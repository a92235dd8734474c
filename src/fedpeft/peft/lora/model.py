"""LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"),
through HF peft.

Each targeted linear layer W gets W + s·B·A with A ``(r, in)``, B ``(out, r)``,
s = α/r (or α/√r with rsLoRA, Kalajdzievski 2023). A starts Kaiming-uniform
(bound 1/√in, peft's default) from our seeded generator, B at zero, so the
adapter starts as the identity. The payload is every A and B plus the head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.peft.injected import InjectedTunerClassifier


def lora_layers(backbone: Backbone, top_layers: int) -> list[int] | None:
    """Indices of the top ``top_layers`` transformer layers (0 = all)."""
    if top_layers < 0 or top_layers > backbone.num_layers:
        raise ValueError(
            f"peft.layers={top_layers}: must be 0 (all) .. {backbone.num_layers} "
            f"(the layers of {backbone.name!r})"
        )
    if top_layers == 0:
        return None
    return list(range(backbone.num_layers - top_layers, backbone.num_layers))


class LoraClassifier(InjectedTunerClassifier):
    """LoRA on the backbone's attention projections + pooling + linear head.

    Args:
        rank: r, the rank of every update.
        alpha: α of the scaling s = α/r.
        target_modules: Module names to adapt; empty = peft's default for the
            architecture (BERT: query, value; Llama: q_proj, v_proj).
        layers: Adapt only the top ``layers`` transformer layers (0 = all).
        rank_scaling: ``"standard"`` (α/r) or ``"rslora"`` (α/√r).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        rank: int = 8,
        alpha: float = 16.0,
        target_modules: Sequence[str] = (),
        layers: int = 0,
        rank_scaling: str = "standard",
        label_names: tuple[str, ...] = (),
    ) -> None:
        from peft import LoraConfig

        if rank < 1:
            raise ValueError(f"peft.rank={rank}: must be >= 1")
        if rank_scaling not in ("standard", "rslora"):
            raise ValueError(
                f"peft.rank_scaling={rank_scaling!r}: choose standard or rslora"
            )
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int
            lora_dropout=0.0,
            target_modules=list(target_modules) or None,
            layers_to_transform=lora_layers(backbone, layers),
            use_rslora=rank_scaling == "rslora",
            bias="none",
        )
        super().__init__(
            backbone,
            num_classes,
            generator=generator,
            peft_config=config,
            label_names=label_names,
        )
        self.rank, self.alpha = rank, alpha
        with torch.no_grad():
            for name, tensor in self.trainable_parameters().items():
                if "lora_A" in name:  # kaiming_uniform_(a=√5): bound = 1/√fan_in
                    bound = 1.0 / math.sqrt(tensor.shape[1])
                    # Drawn on the CPU (the generator's device), then copied to
                    # the backbone's device where peft put the factor.
                    draw = torch.empty(tensor.shape).uniform_(
                        -bound, bound, generator=generator
                    )
                    tensor.copy_(draw)
                elif "lora_B" in name:
                    tensor.zero_()

    def install_per_example_hooks(
        self, current: Callable[[], Mapping[str, torch.Tensor]]
    ) -> Callable[[], None]:
        """Every adapted layer computes ``W x_i + s · B_i A_i x_i``: peft's own
        LoRA branch is bypassed and a forward hook adds example i's branch
        with batched matrix products. A factor missing from ``current()``
        (e.g. a frozen A) is the module's own, shared by all."""
        from peft.tuners.lora import LoraLayer

        def hook(name: str, module: Any) -> Any:
            keys = (f"{name}.lora_A.default.weight", f"{name}.lora_B.default.weight")
            own = (
                cast(torch.Tensor, module.lora_A["default"].weight),
                cast(torch.Tensor, module.lora_B["default"].weight),
            )
            scale = float(module.scaling["default"])

            def add_branch(
                mod: Any, args: tuple[Any, ...], output: torch.Tensor
            ) -> torch.Tensor:
                params, size = current(), output.shape[0]
                a, b = (
                    params[k] if k in params else w.expand(size, *w.shape)
                    for k, w in zip(keys, own, strict=True)
                )  # (B, r, in), (B, out, r)
                down = torch.einsum("bsi,bri->bsr", args[0], a)  # (B, seq, r)
                return output + scale * torch.einsum("bsr,bor->bso", down, b)

            return module.register_forward_hook(add_branch)

        return self.bypass_tuners(LoraLayer, hook)
