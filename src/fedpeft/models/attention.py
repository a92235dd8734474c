"""Scaled dot-product attention that stays fast under bf16 on CPU.

PyTorch's CPU flash-attention kernel is several times slower in bf16 than in
fp32, backward most of all (``bench/attention.py``), and even in fp32 its
backward is slow on the short sequences of this project (64–84 tokens, head
dim 32): attention took a third of a bf16 training step while holding 3% of
its FLOPs. For bf16 CPU inputs that need a gradient :func:`sdpa_cpu`
therefore computes attention as three bf16 operations, each a
well-vectorised kernel:

    scores = query @ key^T            (bf16 matmul, fp32 accumulation)
    probs  = softmax(scale * scores + mask_bias)
    out    = probs @ value

the softmax reducing in fp32 inside the kernel and rounding its output to
bf16, as GPU flash attention rounds its probabilities before the second
matmul. Calls the bf16 path does not cover (dropout while training, a causal
model called without a mask, position biases, soft-capping) up-cast to fp32
and take the fp32 flash kernel. Forwards without a backward (evaluation,
frozen features) take torch's own SDPA on the bf16 inputs: its bf16 flash
*forward* is faster than the fp32 one on up-casts (the main job's evaluation
step of 128 sequences: 271.5 → 202.8 ms, ``bench/packed_linear.py``), though
its backward is the slowest of all. Every other device and dtype goes to
transformers' own SDPA function unchanged.

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
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "fedpeft_sdpa"


def sdpa_cpu(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with bf16 CPU inputs that need a gradient
    computed by :func:`bf16_attention` (or, where it does not apply, in fp32)."""
    if (
        query.device.type != "cpu"
        or query.dtype != torch.bfloat16
        or not _needs_grad((query, key, value))
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
    if _bf16_applies(module, query, attention_mask, kwargs):
        groups = int(getattr(module, "num_key_value_groups", 1))
        out = bf16_attention(
            query,
            repeat_kv(key, groups),
            repeat_kv(value, groups),
            attention_mask,
            kwargs.get("scaling"),
        )
        return out.transpose(1, 2).contiguous(), None  # (batch, seq, heads, dim)
    return sdpa_upcast(module, query, key, value, attention_mask, **kwargs)


def sdpa_upcast(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention on fp32 up-casts, cast back to the
    query's dtype (the CPU's fp32 flash kernel)."""
    with torch.autocast("cpu", enabled=False):  # it would cast straight back
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(query.dtype), weights


def _bf16_applies(
    module: torch.nn.Module,
    query: torch.Tensor,
    mask: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> bool:
    """Whether :func:`bf16_attention` computes what SDPA would for this call
    (one that needs a gradient)."""
    if kwargs.get("dropout", 0.0) and module.training:
        return False
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return False
    is_causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    return mask is not None or not (causal and query.shape[2] > 1)


def _needs_grad(qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> bool:
    """Whether a backward will follow: any of query, key or value requires a
    gradient (a prefix makes only the keys and values differentiable in the
    first layer)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in qkv)


def bf16_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None = None,
) -> torch.Tensor:
    """Softmax attention in bf16 matmuls and a bf16-output softmax.

    Args:
        query: ``(batch, heads, q_len, dim)``.
        key, value: ``(batch, heads, kv_len, dim)`` (key/value heads already
            repeated to the query heads).
        mask: ``None``, boolean (True where attended) or additive float,
            broadcastable to ``(batch, heads, q_len, kv_len)``.
        scaling: Score scale; default ``dim ** -0.5``.

    Returns:
        ``(batch, heads, q_len, dim)`` in the query's dtype.
    """
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2))  # (b, h, q, kv)
    if mask is not None:
        floor = torch.finfo(query.dtype).min
        if mask.dtype == torch.bool:
            bias = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device)
            bias.masked_fill_(~mask, floor)
        else:
            bias = mask.to(query.dtype).clamp_min(floor)  # fp32's min is -inf in bf16
        scores = torch.add(bias, scores, alpha=scale)
    else:
        scores = scores * scale
    return torch.matmul(scores.softmax(-1), value)


def _register() -> None:
    AttentionInterface.register(ATTENTION, sdpa_cpu)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


_register()


def _travels_with_registration(module: torch.nn.Module, args: Any) -> None:
    """Forward pre-hook that does nothing: pickling a model pickles its hooks by
    reference, so unpickling one imports (and registers) this module."""


def use_fast_attention(model: Any) -> bool:
    """Switch ``model`` from SDPA to :func:`sdpa_cpu` (in place).

    Models on another attention implementation (eager, flash, flex) are left
    as they are. Returns whether the model was switched.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(ATTENTION)
    for part in {model, model.base_model}:  # a decoder's body may travel alone
        part.register_forward_pre_hook(_travels_with_registration)
    return True
