"""Tests for the decoder side of fedpeft.models.backbone.Backbone."""

from __future__ import annotations

import pytest
import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.pooling import last_token_pool

BATCH, SEQ = 2, 9


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 9, (BATCH, SEQ), generator=generator)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 6:] = 0  # second row: 6 real tokens, right-padded
    return ids, mask


def _random_prefix(decoder: Backbone, length: int) -> torch.Tensor:
    # (layers, 2, kv_heads, L, head_dim), shared by the batch
    shape = (decoder.num_layers, 2, decoder.num_kv_heads, length, decoder.head_dim)
    return torch.randn(shape, generator=torch.Generator().manual_seed(2))


def test_shape_properties(decoder: Backbone) -> None:
    assert decoder.kind == "decoder"
    assert (decoder.num_layers, decoder.num_heads) == (2, 4)
    assert (decoder.num_kv_heads, decoder.head_dim) == (2, 8)
    assert decoder.body is decoder.model.model  # bare LlamaModel, no LM head


def test_encode_matches_body_and_keeps_shape(decoder: Backbone) -> None:
    ids, mask = _inputs()

    hidden = decoder.encode(decoder.embed(ids), mask)

    expected = decoder.body(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape == (BATCH, SEQ, decoder.hidden_size)
    torch.testing.assert_close(hidden, expected)


def test_pool_takes_last_real_token(decoder: Backbone) -> None:
    hidden = torch.randn(BATCH, SEQ, decoder.hidden_size)
    _, mask = _inputs()

    pooled = decoder.pool(hidden, mask)

    last = mask.sum(dim=1) - 1  # right padding
    torch.testing.assert_close(pooled, hidden[torch.arange(BATCH), last])


def test_last_token_pool_handles_left_padding() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])

    pooled = last_token_pool(hidden, mask)

    assert pooled.flatten().tolist() == [3.0, 5.0]


def test_prefix_from_real_tokens_equals_running_them(decoder: Backbone) -> None:
    # The cache of the first 3 tokens as a prefix must reproduce the full run:
    # this checks the prefix is attended and positions continue after it.
    ids, mask = _inputs()
    full = decoder.encode(decoder.embed(ids), mask)
    cache = decoder.body(input_ids=ids[:, :3], use_cache=True).past_key_values

    tail = decoder.encode(decoder.embed(ids[:, 3:]), mask[:, 3:], cache)

    torch.testing.assert_close(tail, full[:, 3:])
    assert cache.get_seq_length() == 3  # the caller's cache is not extended


def test_prefix_changes_states_and_gets_gradients(decoder: Backbone) -> None:
    ids, mask = _inputs()
    prefix = _random_prefix(decoder, length=4).requires_grad_(True)

    hidden = decoder.encode(decoder.embed(ids), mask, prefix)
    hidden.sum().backward()

    assert hidden.shape == (BATCH, SEQ, decoder.hidden_size)
    assert not torch.allclose(hidden, decoder.encode(decoder.embed(ids), mask))
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_full_width_mask_is_accepted(decoder: Backbone) -> None:
    ids, mask = _inputs()
    prefix = _random_prefix(decoder, length=4)
    wide = torch.cat([torch.ones(BATCH, 4, dtype=torch.long), mask], dim=1)

    narrow_out = decoder.encode(decoder.embed(ids), mask, prefix)
    wide_out = decoder.encode(decoder.embed(ids), wide, prefix)

    torch.testing.assert_close(narrow_out, wide_out)


def test_zero_length_prefix_equals_no_prefix(decoder: Backbone) -> None:
    ids, mask = _inputs()

    hidden = decoder.encode(decoder.embed(ids), mask, _random_prefix(decoder, 0))

    torch.testing.assert_close(hidden, decoder.encode(decoder.embed(ids), mask))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 2, 2, 4, 8), "has 3 layers"),
        ((2, 2, 3, 4, 8), "kv_heads=2"),
        ((2, 2, 2, 4, 7), "head_dim=8"),
        ((2, 2, 5, 2, 4, 8), "batch=2 or 1"),
    ],
)
def test_bad_prefix_shapes_are_rejected(
    decoder: Backbone, shape: tuple[int, ...], match: str
) -> None:
    ids, mask = _inputs()

    with pytest.raises(ValueError, match=match):
        decoder.encode(decoder.embed(ids), mask, torch.zeros(shape))


def test_bad_mask_width_is_rejected(decoder: Backbone) -> None:
    ids, mask = _inputs()

    with pytest.raises(ValueError, match="attention_mask of shape"):
        decoder.encode(decoder.embed(ids), mask[:, :5], _random_prefix(decoder, 2))


def test_lm_head_rows_are_tied_embedding_rows(decoder: Backbone) -> None:
    rows = decoder.lm_head_rows([7, 8])

    table = decoder.word_embeddings.weight
    assert rows.shape == (2, decoder.hidden_size)
    torch.testing.assert_close(rows, table[[7, 8]])
    torch.testing.assert_close(rows, decoder.model.lm_head.weight[[7, 8]])


def test_lm_head_rows_rejects_unknown_ids(decoder: Backbone) -> None:
    with pytest.raises(ValueError, match=r"must be in \[0, 9\)"):
        decoder.lm_head_rows([9])


def test_verbalizer_ids_first_token_per_label(decoder: Backbone) -> None:
    assert decoder.verbalizer_ids(["positive", "negative"]) == [7, 8]


def test_verbalizer_ids_reject_shared_first_token(decoder: Backbone) -> None:
    # Both unknown words map to <unk>.
    with pytest.raises(ValueError, match="'great' and 'awful' share"):
        decoder.verbalizer_ids(["great", "awful"])
