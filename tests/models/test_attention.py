"""Attention computed in fp32 for bf16 CPU inputs, equal to SDPA otherwise."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from fedpeft.models.attention import ATTENTION, sdpa_fp32_on_cpu, use_fast_attention
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


def test_bf16_inputs_are_attended_in_fp32() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv(torch.bfloat16)
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[0, :, :, 5:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = sdpa_fp32_on_cpu(_module(), q, k, v, mask)
    ref, _ = sdpa_attention_forward(_module(), q.float(), k.float(), v.float(), mask)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref.to(torch.bfloat16))
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16


def test_fp32_inputs_take_plain_sdpa() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv(torch.float32)
    out, _ = sdpa_fp32_on_cpu(_module(), q, k, v, None)
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
