"""Tiny decoder backbones built in the test (no real weights needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedpeft.models.backbone import Backbone

WORDS = ["<unk>", "</s>", "the", "movie", "was", "good", "bad", "positive", "negative"]


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer with EOS and UNK tokens but no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token="</s>"
    )


def tiny_llama(vocab_size: int = len(WORDS), seed: int = 0) -> Any:
    """A random 2-layer Llama (4 query heads, 2 key/value heads, head_dim 8)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model


def save_tiny_decoder(directory: Path) -> Path:
    """Save the tiny Llama and tokenizer as a Hugging Face model directory."""
    tiny_llama().save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(name="tiny_llama")
def tiny_llama_fixture() -> Any:
    """The :func:`tiny_llama` builder (test modules cannot import conftest)."""
    return tiny_llama


@pytest.fixture(name="tiny_tokenizer")
def tiny_tokenizer_fixture() -> Any:
    """The :func:`tiny_tokenizer` builder."""
    return tiny_tokenizer


@pytest.fixture(name="save_tiny_decoder")
def save_tiny_decoder_fixture() -> Any:
    """The :func:`save_tiny_decoder` writer."""
    return save_tiny_decoder


@pytest.fixture(scope="module")
def decoder() -> Backbone:
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    return Backbone("tiny-llama", tiny_llama(), tokenizer, "decoder")
