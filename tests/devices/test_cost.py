"""Tests for fedpeft.devices.cost and fedpeft.devices.menus."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.devices import (
    AdapterOption,
    BackboneDims,
    ClientCost,
    DeviceProfile,
    build_menu,
    estimate_cost,
    lora_option,
    prompt_option,
    round_time,
    top_layers_option,
)

# 2 layers, h=8, i=32, vocab 10, 2 heads; 80 embedding + 2 * 500 block weights.
DIMS = BackboneDims(
    num_params=1080, num_layers=2, hidden=8, intermediate=32, vocab=10, heads=2
)
BERT_BASE = BackboneDims(108_770_304, 12, 768, 3072, 30522, 12)
SETTINGS = settings(max_examples=30, deadline=None)


def _cost(option: AdapterOption, *, dims: BackboneDims = DIMS, **kw: int) -> ClientCost:
    args = {"batch_size": 4, "seq_len": 16, "num_examples": 10, "epochs": 1} | kw
    return estimate_cost(dims, option, **args)


def test_known_values_by_hand() -> None:
    option = AdapterOption("prompt", 2, trainable_params=16, extra_tokens=2)

    cost = _cost(option, batch_size=2, seq_len=6, num_examples=3, epochs=2)

    # S = 8; per-token activations 9*8 + 2*32 + 2.5*2*8 = 176; per layer 2*8*176.
    layer_values = 2 * 8 * 176
    memory = 1080 * 4 + (2 + 1) * layer_values * 4 + 16 * 4 * 4
    # T = 3*2*8 = 48; P = 500; attention 2*8*8 = 128 per token per layer.
    flops = 48 * (2 * (2 * 500 + 128) + 2 * (2 * 500 + 128) + 2 * 16)
    assert cost == ClientCost(memory, float(flops), 64, 64)


def test_full_fine_tuning_is_the_6n_rule() -> None:
    full = AdapterOption("full", 0, trainable_params=1000)

    cost = _cost(full, seq_len=16, num_examples=1)

    attention = 2 * 2 * 16 * 8  # forward + backward per layer, 2 layers
    assert cost.flops == 16 * (6 * 1000 + 2 * attention)


@SETTINGS
@given(r=st.integers(1, 64), batch=st.integers(1, 32))
def test_cost_monotone_in_lora_rank(r: int, batch: int) -> None:
    small = _cost(lora_option(BERT_BASE, r), dims=BERT_BASE, batch_size=batch)
    large = _cost(lora_option(BERT_BASE, r + 1), dims=BERT_BASE, batch_size=batch)

    assert small.memory_bytes < large.memory_bytes
    assert small.flops < large.flops
    assert small.upload_bytes < large.upload_bytes


@SETTINGS
@given(length=st.integers(1, 64), batch=st.integers(1, 32))
def test_cost_monotone_in_prompt_length(length: int, batch: int) -> None:
    small = _cost(prompt_option(DIMS, length), batch_size=batch)
    large = _cost(prompt_option(DIMS, length + 1), batch_size=batch)

    assert small.memory_bytes < large.memory_bytes
    assert small.flops < large.flops


@SETTINGS
@given(batch=st.integers(1, 64), size=st.integers(1, 16))
def test_memory_grows_with_batch_flops_do_not(batch: int, size: int) -> None:
    option = lora_option(DIMS, size)

    small, large = _cost(option, batch_size=batch), _cost(option, batch_size=batch + 1)

    assert small.memory_bytes < large.memory_bytes
    assert small.flops == large.flops


def test_shallow_backprop_needs_less_memory_and_compute() -> None:
    full_depth = AdapterOption("lora", 4, trainable_params=5000)
    top_two = AdapterOption("lora", 4, trainable_params=5000, backprop_depth=2)

    full, top = _cost(full_depth, dims=BERT_BASE), _cost(top_two, dims=BERT_BASE)

    assert top.memory_bytes < full.memory_bytes
    assert top.flops < full.flops


def test_top_layers_menu_sizes() -> None:
    menu = build_menu(DIMS, "top-layers", [2, 1, 1], head_params=7)

    assert [o.size for o in menu] == [1, 2]
    assert menu[1] == top_layers_option(DIMS, 2, head_params=7)
    assert menu[0].trainable_params == 507
    assert menu[0].backprop_depth == 1


def test_backprop_depth_beyond_layers_is_an_error() -> None:
    with pytest.raises(ValueError, match="backprop_depth=3 exceeds"):
        _cost(AdapterOption("top-layers", 3, 1, backprop_depth=3))


@pytest.mark.parametrize(
    ("batch_size", "seq_len", "epochs", "match"),
    [(0, 8, 1, "batch_size"), (1, 0, 1, "seq_len"), (1, 8, 0, "epochs")],
)
def test_estimate_rejects_bad_arguments(
    batch_size: int, seq_len: int, epochs: int, match: str
) -> None:
    with pytest.raises(ValueError, match=f"{match} must be an integer >= 1"):
        _cost(
            lora_option(DIMS, 1), batch_size=batch_size, seq_len=seq_len, epochs=epochs
        )


def test_option_and_menu_validation() -> None:
    with pytest.raises(ValueError, match="trainable_params"):
        AdapterOption("lora", 1, -1)
    with pytest.raises(ValueError, match="has no builder"):
        build_menu(DIMS, "adapters", [1])
    with pytest.raises(ValueError, match="sizes is empty"):
        build_menu(DIMS, "lora", [])


def test_round_time_by_hand() -> None:
    profile = DeviceProfile("p", "phone", 1, 1e9, 2e6, 4e6)
    cost = ClientCost(
        memory_bytes=1, flops=3e9, upload_bytes=4_000_000, download_bytes=8_000_000
    )

    assert round_time(cost, profile) == pytest.approx(3.0 + 2.0 + 2.0)


@pytest.fixture
def transformers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """transformers with the Hub switched off: configs only, no downloads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module: ModuleType = pytest.importorskip("transformers")
    return module


def test_dims_from_bert_config(transformers: ModuleType) -> None:
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=50,
        type_vocab_size=2,
    )

    dims = BackboneDims.from_hf_config(config)

    embeddings = (100 + 50 + 2) * 32
    blocks = 3 * (4 * 32 * 32 + 2 * 32 * 64)
    assert dims == BackboneDims(embeddings + blocks, 3, 32, 64, 100, 4)


def test_dims_from_llama_config_counts_gqa_and_gated_mlp(
    transformers: ModuleType,
) -> None:
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
    )

    dims = BackboneDims.from_hf_config(config)

    # q, o: 64x64; k, v: 64x32 (2 of 4 heads); gate, up, down: 64x128.
    blocks = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    assert dims.num_params == 100 * 64 + blocks
    assert (dims.num_layers, dims.heads, dims.intermediate) == (2, 4, 128)
    assert BackboneDims.from_hf_config(config, num_params=99_999).num_params == 99_999


def test_dims_from_incomplete_config_names_missing_keys() -> None:
    class Partial:
        hidden_size = 8

    with pytest.raises(ValueError, match="num_hidden_layers"):
        BackboneDims.from_hf_config(Partial())


def test_lora_on_top_layers_costs_less_and_says_so() -> None:
    everywhere = lora_option(BERT_BASE, 8)
    top2 = lora_option(BERT_BASE, 8, layers=2)

    assert top2.trainable_params * 6 == everywhere.trainable_params
    assert (top2.label, everywhere.label) == ("lora-8@top2", "lora-8")
    low, high = (_cost(o, dims=BERT_BASE) for o in (top2, everywhere))
    assert low.flops < high.flops and low.memory_bytes < high.memory_bytes
    with pytest.raises(ValueError, match="layers must be 0"):
        lora_option(BERT_BASE, 8, layers=13)
