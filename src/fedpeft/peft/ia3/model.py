"""IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
Cheaper than In-Context Learning"), through HF peft.

Learned vectors rescale the keys, values and the feed-forward activations
(l_k ⊙ K, l_v ⊙ V, l_ff ⊙ FFN); they start at 1 (the identity), so IA3 needs
no random init. The payload is the vectors plus the head: the smallest
method here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fedpeft.models.backbone import Backbone
from fedpeft.peft.injected import InjectedTunerClassifier
from fedpeft.peft.lora.model import lora_layers


class IA3Classifier(InjectedTunerClassifier):
    """IA3 + pooling + linear head.

    Args:
        target_modules: Module names to rescale; empty = peft's default for the
            architecture (BERT: key, value, output.dense; Llama: k_proj,
            v_proj, down_proj).
        feedforward_modules: Which targets are feed-forward (scaled at the
            input); empty = peft's default.
        layers: Rescale only the top ``layers`` transformer layers (0 = all).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        target_modules: Sequence[str] = (),
        feedforward_modules: Sequence[str] = (),
        layers: int = 0,
        label_names: tuple[str, ...] = (),
    ) -> None:
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF_DEFAULTS,
        )
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS,
        )

        from peft import IA3Config

        model_type = backbone.model.config.model_type
        targets = list(target_modules) or DEFAULTS.get(model_type)
        feedforward = list(feedforward_modules) or FF_DEFAULTS.get(model_type)
        if targets is None or feedforward is None:
            raise ValueError(
                f"peft has no IA3 default for model type {model_type!r}: set "
                "peft.target_modules and peft.feedforward_modules"
            )
        top = lora_layers(backbone, layers)
        if top is not None:  # IA3Config has no layers_to_transform: use a regex
            layer_re = "|".join(str(i) for i in top)
            names = "|".join(t.replace(".", r"\.") for t in targets)
            targets_arg: str | list[str] = rf".*\.({layer_re})\..*({names})$"
        else:
            targets_arg = targets
        config = IA3Config(target_modules=targets_arg, feedforward_modules=feedforward)
        super().__init__(
            backbone,
            num_classes,
            generator=generator,
            peft_config=config,
            label_names=label_names,
        )

    def install_per_example_hooks(
        self, current: Callable[[], Mapping[str, torch.Tensor]]
    ) -> Callable[[], None]:
        """peft's own scaling is bypassed; hooks rescale example i's
        feed-forward input (before the layer) or its key/value output (after
        it) by its own vector, in the vector's dtype and back, as peft does."""
        from peft.tuners.ia3 import IA3Layer

        def hook(name: str, module: Any) -> Any:
            key = f"{name}.ia3_l.default"
            if module.is_feedforward:

                def scale_input(mod: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
                    scale = current()[key].flatten(1)  # (B, in)
                    x = args[0]
                    return ((x.to(scale.dtype) * scale[:, None]).to(x.dtype), *args[1:])

                return module.register_forward_pre_hook(scale_input)

            def scale_output(
                mod: Any, args: tuple[Any, ...], output: torch.Tensor
            ) -> torch.Tensor:
                scale = current()[key].flatten(1)  # (B, out)
                return (output * scale[:, None]).to(output.dtype)

            return module.register_forward_hook(scale_output)

        return self.bypass_tuners(IA3Layer, hook)
