"""Scaled dot-product attention that stays fast under bf16 on CPU.

PyTorch's CPU flash-attention kernel is several times slower in bf16 than in
fp32, backward most of all (``bench/attention.py``: forward + backward of one
MiniLM-sized attention is 4–6× slower in bf16). Under bf16 autocast every
attention call would take that path, so :func:`sdpa_fp32_on_cpu` runs CPU
attention in fp32 (inputs up-cast, output cast back) and leaves every other
device and dtype to transformers' own SDPA function. The matmuls around it
keep their bf16 speed; attention is a small share of a layer's FLOPs.

Registered with transformers as :data:`ATTENTION` (for attention and masks)
when this module is imported; :func:`use_fast_attention` switches a loaded
model to it where the model runs SDPA. The registration is per process, and a
switched model names it in its config, so the switch also adds a (no-op)
forward pre-hook referring to this module: a model pickled into another
process (a Ray actor, a worker) imports this module, and with it the
registration, as it is unpickled.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "fedpeft_sdpa"


def sdpa_fp32_on_cpu(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, computed in fp32 for bf16 CPU inputs."""
    if query.device.type != "cpu" or query.dtype != torch.bfloat16:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
    # Autocast would cast the inputs straight back to bf16.
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(query.dtype), weights


def _register() -> None:
    AttentionInterface.register(ATTENTION, sdpa_fp32_on_cpu)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


_register()


def _travels_with_registration(module: torch.nn.Module, args: Any) -> None:
    """Forward pre-hook that does nothing: pickling a model pickles its hooks by
    reference, so unpickling one imports (and registers) this module."""


def use_fast_attention(model: Any) -> bool:
    """Switch ``model`` from SDPA to :func:`sdpa_fp32_on_cpu` (in place).

    Models on another attention implementation (eager, flash, flex) are left
    as they are. Returns whether the model was switched.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(ATTENTION)
    for part in {model, model.base_model}:  # a decoder's body may travel alone
        part.register_forward_pre_hook(_travels_with_registration)
    return True
