"""Tests for fedpeft.models.embed and tokenization with a decoder backbone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.embed import embed_dataset
from fedpeft.models.loading import _with_pad_token
from fedpeft.models.pooling import mean_pool
from fedpeft.models.tokenized import tokenize

TEXTS = ["the movie was good", "bad", "the movie was bad the movie"]


def test_missing_pad_token_falls_back_to_eos(
    tiny_tokenizer: Callable[[], Any],
) -> None:
    tokenizer = _with_pad_token(tiny_tokenizer(), "tiny")

    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("</s>", 1)


def test_tokenize_pads_on_the_right(decoder: Backbone) -> None:
    data = tokenize(decoder, TEXTS, np.zeros(3), max_length=8)

    assert data.lengths.tolist() == [4, 1, 6]
    assert data.input_ids[1].tolist() == [6, 1, 1, 1, 1, 1]  # "bad" then pads


def test_embed_dataset_pools_the_last_token_for_decoders(decoder: Backbone) -> None:
    data = tokenize(decoder, TEXTS, np.arange(3), max_length=8)

    pooled = embed_dataset(decoder, data, batch_size=2, precision="fp32")

    batch = data.batch(np.arange(3))
    hidden = decoder.body(input_ids=batch.input_ids).last_hidden_state
    # causal attention: a sequence's last real state ignores later padding
    expected = hidden[torch.arange(3), torch.from_numpy(data.lengths - 1)]
    torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(pooled, mean_pool(hidden, batch.attention_mask))


def test_encoder_pool_is_the_mean(decoder: Backbone) -> None:
    encoder = Backbone("enc", decoder.model, decoder.tokenizer, "encoder")
    hidden, mask = torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [1, 1, 1]])

    torch.testing.assert_close(encoder.pool(hidden, mask), mean_pool(hidden, mask))


def test_real_smollm2_verbalizers_are_distinct(
    tiny_llama: Callable[..., Any],
) -> None:
    labels = ["positive", "negative", "neutral"]
    from fedpeft.models.gguf import is_cached, model_cache_dir

    directory = model_cache_dir("smollm2-135m")
    if not is_cached(directory):
        pytest.skip(f"SmolLM2 is not cached in {directory}")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = tiny_llama(vocab_size=len(tokenizer))  # only the tokenizer is real
    backbone = Backbone("smollm2", model, tokenizer, "decoder")

    ids = backbone.verbalizer_ids(labels)

    assert len(set(ids)) == len(labels)
    assert [tokenizer.decode([i]) for i in ids] == [" " + w for w in labels]
