"""bf16 autocast applies to the device the backbone computes on, under it the
backbone runs its bf16 weight copy, and ``"auto"`` picks bf16 only where the
hardware multiplies bf16 matrices."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import fedpeft.models.precision as precision_module
from fedpeft.config import load_config
from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast, cpu_native_bf16, resolve_precision


def test_bf16_casts_cpu_matmuls_even_when_cuda_is_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    x = torch.ones(2, 3)
    with autocast("bf16", "cpu"):
        assert (x @ x.T).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (x @ x.T).dtype == torch.float32


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match=r"choose 'auto' .*'fp32' or 'bf16'"):
        autocast("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        load_config(None, ["model.precision=fp16"])


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        pytest.skip("no /proc/cpuinfo to check the CPU probe against")
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    return set(lines[0].split(":", 1)[1].split()) if lines else set()


def test_cpu_probe_agrees_with_the_kernel_flags() -> None:
    flags = _cpuinfo_flags()
    assert cpu_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_bf16_hardware(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision_module, "cpu_native_bf16", lambda: native)
    expected = "bf16" if native else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    x = torch.ones(2, 3)
    with autocast("auto", "cpu"):
        assert (x @ x.T).dtype == (torch.bfloat16 if native else torch.float32)
    assert load_config(None, []).model.precision == "auto"
    assert load_config(None, []).model.eval_precision == "auto"


def test_explicit_bf16_without_hardware_runs_and_warns_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision_module, "cpu_native_bf16", lambda: False)
    precision_module._warn_emulated.cache_clear()
    with pytest.warns(RuntimeWarning, match=r"emulates the bf16 matmuls.*'auto'"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"  # once per process
        assert resolve_precision("fp32", "cpu") == "fp32"
        with autocast("bf16", "cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def _inputs(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 3, 4, 5], [2, 3, 6, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    return backbone.embed(ids), mask


def test_bf16_autocast_runs_a_bf16_copy_and_fp32_the_body_itself(
    decoder: Backbone,
) -> None:
    embeds, mask = _inputs(decoder)
    before = {n: p.clone() for n, p in decoder.body.named_parameters()}
    fp32 = decoder.encode(embeds, mask)
    with autocast("bf16", "cpu"):
        body, dtype = decoder.compute_body()
        bf16 = decoder.encode(embeds, mask)
    assert body is decoder.bf16_body and dtype == torch.bfloat16
    assert decoder.compute_body() == (decoder.body, torch.float32)
    assert all(p.dtype == torch.bfloat16 for p in decoder.bf16_body.parameters())
    assert not any(p.requires_grad for p in decoder.bf16_body.parameters())
    # the copy owns its weights: the fp32 body is untouched and still fp32
    for name, p in decoder.body.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name])
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    real = mask.bool()
    assert not torch.equal(bf16[real], fp32[real])  # it did compute in bf16
    torch.testing.assert_close(bf16[real], fp32[real], atol=0.05, rtol=0.05)


def test_bf16_copy_passes_gradients_to_fp32_inputs_and_prefix(
    decoder: Backbone,
) -> None:
    embeds, mask = _inputs(decoder)
    embeds = embeds.clone().requires_grad_(True)
    heads, dim = decoder.num_kv_heads, decoder.head_dim
    prefix = [
        (torch.randn(heads, 3, dim, requires_grad=True),) * 2
        for _ in range(decoder.num_layers)
    ]
    grads = []
    for precision in ("fp32", "bf16"):
        with autocast(precision, "cpu"):
            out = decoder.encode(embeds, mask, prefix)
        (g_embeds, g_prefix) = torch.autograd.grad(
            out[mask.bool()].sum(), [embeds, prefix[0][0]]
        )
        assert g_embeds.dtype == torch.float32 and g_prefix.dtype == torch.float32
        grads.append((g_embeds, g_prefix))
    for fp32, bf16 in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(bf16, fp32, atol=0.1, rtol=0.1)


def test_a_bf16_copy_first_made_under_inference_mode_can_train(
    tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    backbone = Backbone("tiny-llama", tiny_llama(), tokenizer, "decoder")
    embeds, mask = _inputs(backbone)
    with torch.inference_mode(), autocast("bf16", "cpu"):
        backbone.encode(embeds, mask)  # evaluation first makes the copy
    embeds = embeds.clone().requires_grad_(True)
    with autocast("bf16", "cpu"):
        out = backbone.encode(embeds, mask)
    (grad,) = torch.autograd.grad(out.sum(), [embeds])
    assert torch.isfinite(grad).all()
