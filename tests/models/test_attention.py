"""bf16 CPU attention equal to fp32 SDPA up to bf16 rounding; SDPA itself otherwise."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from fedpeft.models.attention import ATTENTION, sdpa_cpu, use_fast_attention
from fedpeft.models.loading import load_backbone


def _qkv(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, 4, 7, 8, generator=gen).to(dtype).requires_grad_(True)
        for _ in range(3)
    ]


def _module() -> torch.nn.Module:
    module = torch.nn.Module()
    module.is_causal = False
    return module


def _reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """fp32 SDPA on the same (bf16-rounded) inputs, as (batch, seq, heads, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ref, _ = sdpa_attention_forward(_module(), q.float(), k.float(), v.float(), mask)
    return ref


def _close(low: torch.Tensor, exact: torch.Tensor) -> bool:
    """Equal up to bf16 rounding of scores, probabilities and output."""
    exact = exact.detach()
    return float((low.detach().float() - exact).norm() / exact.norm()) < 0.02


def _padding_mask(q_len: int, kv_len: int) -> torch.Tensor:
    mask = torch.ones(2, 1, q_len, kv_len, dtype=torch.bool)
    mask[0, :, :, kv_len - 2 :] = False  # the first row's last two keys are padding
    return mask


@pytest.mark.parametrize("kind", ["bool", "additive", "none"])
def test_bf16_inputs_match_fp32_attention(kind: str) -> None:
    q, k, v = _qkv(torch.bfloat16)
    mask: torch.Tensor | None = _padding_mask(7, 7)
    if kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(
            ~mask, torch.finfo(torch.float32).min
        )
    elif kind == "none":
        mask = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = sdpa_cpu(_module(), q, k, v, mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 7, 4, 8)
    assert _close(out, _reference(q, k, v, mask))
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16


def test_bf16_gradients_match_fp32_attention() -> None:
    mask = _padding_mask(7, 7)
    q, k, v = _qkv(torch.bfloat16)
    out, _ = sdpa_cpu(_module(), q, k, v, mask)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weights).sum().backward()
    q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    (_reference(q32, k32, v32, mask) * weights).sum().backward()
    for low, exact in ((q, q32), (k, k32), (v, v32)):
        assert low.grad is not None and exact.grad is not None
        assert _close(low.grad, exact.grad)


def test_bf16_attention_with_a_prefix_and_grouped_keys() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=gen).to(torch.bfloat16).requires_grad_()
    k, v = (torch.randn(2, 2, 9, 8, generator=gen).to(torch.bfloat16) for _ in "kv")
    module = _module()
    module.num_key_value_groups = 2  # 4 query heads share 2 key/value heads
    mask = _padding_mask(5, 9)  # 4 prefix positions before 5 inputs
    out, _ = sdpa_cpu(module, q, k, v, mask, scaling=0.3)
    k4, v4 = (t.repeat_interleave(2, dim=1) for t in (k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k4.float(), v4.float(), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    assert _close(out, ref)


def test_uncovered_calls_are_attended_in_fp32() -> None:
    """A causal model without a mask (and dropout while training) take the
    up-cast flash kernel: exactly fp32 SDPA, rounded once."""
    q, k, v = _qkv(torch.bfloat16)
    causal = _module()
    causal.is_causal = True
    out, _ = sdpa_cpu(causal, q, k, v, None)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True
    ).transpose(1, 2)
    assert torch.equal(out, ref.to(torch.bfloat16))
    training = _module().train()
    out, _ = sdpa_cpu(training, q, k, v, None, dropout=0.1)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())


def test_a_forward_without_backward_takes_torchs_bf16_kernel() -> None:
    """Evaluation and frozen features: torch's own SDPA on the bf16 inputs,
    exactly, and within bf16 rounding of fp32 attention."""
    q, k, v = _qkv(torch.bfloat16)
    mask = _padding_mask(7, 7)
    plain = [t.detach() for t in (q, k, v)]
    native = torch.nn.functional.scaled_dot_product_attention(
        *plain, attn_mask=mask
    ).transpose(1, 2)
    exact = _reference(*plain, mask)
    with torch.inference_mode():
        out, _ = sdpa_cpu(_module(), q, k, v, mask)
    assert torch.equal(out, native) and _close(out, exact)
    out, _ = sdpa_cpu(_module(), *plain, mask)  # grad mode on, nothing to differentiate
    assert torch.equal(out, native)
    trained, _ = sdpa_cpu(_module(), q, k, v, mask)  # the bf16 path
    assert trained.requires_grad and _close(trained, exact)
    # a trainable prefix: only the keys and values need a gradient
    prefixed, _ = sdpa_cpu(_module(), q.detach(), k, v, mask)
    assert torch.equal(prefixed, trained)


def test_fp32_inputs_take_plain_sdpa() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv(torch.float32)
    out, _ = sdpa_cpu(_module(), q, k, v, None)
    ref, _ = sdpa_attention_forward(_module(), q, k, v, None)
    assert torch.equal(out, ref)


def _encode(model: Any, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 3, 4, 5, 1, 1], [3, 4, 6, 2, 5, 7]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask)
    states = hidden.last_hidden_state.float()
    states.sum().backward()
    assert embeds.grad is not None
    return states.detach(), embeds.grad


def test_switched_decoder_matches_sdpa(tiny_llama: Any) -> None:
    sdpa = tiny_llama()
    sdpa.set_attn_implementation("sdpa")
    fast = copy.deepcopy(sdpa)
    assert use_fast_attention(fast)
    assert fast.config._attn_implementation == ATTENTION
    ref, ref_grad = _encode(sdpa, "fp32")
    out, grad = _encode(fast, "fp32")
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)
    out16, grad16 = _encode(fast, "bf16")
    for low, exact in ((out16, ref), (grad16, ref_grad)):  # bf16 rounding only
        assert float((low - exact).norm() / exact.norm()) < 0.02


def test_other_implementations_are_left_alone(tiny_llama: Any) -> None:
    eager = tiny_llama()
    eager.set_attn_implementation("eager")
    assert not use_fast_attention(eager)
    assert eager.config._attn_implementation == "eager"


@pytest.mark.parametrize("name", ["minilm-l6"])
def test_loaded_backbones_use_it(name: str) -> None:
    assert load_backbone(name).model.config._attn_implementation == ATTENTION


def test_a_switched_model_works_when_unpickled_in_a_fresh_process(
    tiny_llama: Any,
) -> None:
    import pickle
    import subprocess
    import sys

    model = tiny_llama()
    model.set_attn_implementation("sdpa")
    assert use_fast_attention(model)
    script = (
        "import pickle, sys, torch\n"
        "model = pickle.loads(sys.stdin.buffer.read())\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    out = model(input_ids=torch.tensor([[2, 3, 4]]))\n"
        "print(model.config._attn_implementation, tuple(out.last_hidden_state.shape))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(model.model),  # the body alone, as a worker may get it
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == [ATTENTION, "(1,", "3,", "32)"]
