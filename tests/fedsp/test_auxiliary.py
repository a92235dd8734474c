"""The auxiliary model: plans, shared storage, prompt transfer, save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedpeft.fedsp.auxiliary import (
    build_auxiliary,
    layer_list,
    layer_plan,
    model_size,
)
from fedpeft.fedsp.store import load_auxiliary, save_auxiliary
from fedpeft.models.backbone import Backbone
from fedpeft.models.tied import WEIGHTS
from fedpeft.peft.prefix.model import PrefixClassifier
from tests.models.conftest import tiny_tokenizer


def deep_llama(layers: int = 4) -> Backbone:
    """A random Llama with ``layers`` layers and the tiny word tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=9,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    return Backbone("deep-llama", model, tokenizer, "decoder")


def hidden(backbone: Backbone, prefix: Any = None) -> torch.Tensor:
    ids = torch.tensor([[2, 3, 4, 5, 6]])
    mask = torch.ones_like(ids)
    return backbone.encode(backbone.embed(ids), mask, prefix)


def test_plans_by_hand() -> None:
    share = layer_plan(6)
    assert share.targets == (0, 1, 2, 3, 4, 5)
    assert share.sources == (0,) * 6 and share.owners == (0,) * 6
    assert share.prefix_map() == (0, 1, 2, 3, 4, 5)
    drop = layer_plan(7, depth=3, share=False)
    assert drop.targets == (0, 3, 6) == drop.sources and drop.owners == (0, 1, 2)
    # layers 0,1 -> 0; 2 is nearer 3 (position 1); 4,5 -> 3 then 6; 5 nearer 6
    assert drop.prefix_map() == (0, 0, 1, 1, 1, 2, 2)
    assert layer_plan(6, source=-1).sources == (5,) * 6
    with pytest.raises(ValueError, match=r"fedsp\.depth=7"):
        layer_plan(6, depth=7)
    with pytest.raises(ValueError, match=r"fedsp\.source=9"):
        layer_plan(6, source=9)


def test_shared_positions_share_storage_and_keep_their_cache_index() -> None:
    full = deep_llama(4)
    aux = build_auxiliary(full, layer_plan(4))
    layers = layer_list(aux.model)
    assert len(layers) == 4 and aux.num_layers == 4
    pointers = {layer.mlp.up_proj.weight.data_ptr() for layer in layers}
    assert len(pointers) == 1
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    per_layer = sum(p.numel() for p in layer_list(full.model)[0].parameters())
    assert model_size(full.model).parameters - model_size(aux.model).parameters == (
        3 * per_layer
    )
    # the copy is a copy: the full model's layer 0 is not the auxiliary's
    assert (
        layers[0].mlp.up_proj.weight is not layer_list(full.model)[0].mlp.up_proj.weight
    )
    torch.testing.assert_close(
        layers[0].mlp.up_proj.weight, layer_list(full.model)[0].mlp.up_proj.weight
    )


def test_depth_reduction_keeps_the_chosen_layers_and_leaves_the_full_model() -> None:
    full = deep_llama(4)
    before = hidden(full)
    aux = build_auxiliary(full, layer_plan(4, depth=2, share=False))
    assert aux.num_layers == 2 and full.num_layers == 4
    kept = layer_list(aux.model)
    for position, source in enumerate((0, 3)):
        torch.testing.assert_close(
            kept[position].self_attn.q_proj.weight,
            layer_list(full.model)[source].self_attn.q_proj.weight,
        )
    torch.testing.assert_close(hidden(full), before)
    assert hidden(aux).shape == before.shape


def test_prompts_move_between_auxiliary_and_full_model_with_identical_shapes() -> None:
    full = deep_llama(4)
    gen = torch.Generator().manual_seed(0)
    for plan in (layer_plan(4), layer_plan(4, depth=2)):
        aux = build_auxiliary(full, plan)
        layer_map = plan.prefix_map() if plan.depth < plan.num_layers else None
        server = PrefixClassifier(full, 2, generator=gen, layer_map=layer_map)
        client = PrefixClassifier(aux, 2, generator=gen)
        shapes = {k: v.shape for k, v in server.trainable_state_like().items()}
        assert shapes == {k: v.shape for k, v in client.trainable_state_like().items()}
        client.load_trainable_state(server.trainable_state())
        stored = server.prefix.detach()
        served = server.prefix_values().detach()  # every full layer
        assert served.shape[0] == 4
        for layer, row in enumerate(plan.prefix_map()):
            torch.testing.assert_close(served[layer], stored[row])


def test_saved_auxiliary_loads_alone_tied_and_equal(tmp_path: Path) -> None:
    full = deep_llama(4)
    aux = build_auxiliary(full, layer_plan(4, depth=3))
    directory = save_auxiliary(aux, tmp_path / "aux", {"note": "test"})
    loaded = load_auxiliary(directory)
    torch.testing.assert_close(hidden(loaded), hidden(aux))
    layers = layer_list(loaded.model)
    assert len({layer.self_attn.o_proj.weight.data_ptr() for layer in layers}) == 1
    assert (directory / WEIGHTS).stat().st_size < 0.6 * 4 * model_size(
        full.model
    ).parameters
    with pytest.raises(FileExistsError, match="exists"):
        save_auxiliary(aux, directory, {})


def test_corrupt_or_foreign_weights_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    aux = build_auxiliary(deep_llama(4), layer_plan(4))
    directory = save_auxiliary(aux, tmp_path / "aux", {})
    tensors = load_file(str(directory / WEIGHTS))
    name = next(n for n in tensors if "layers.0.mlp" in n)
    save_file({**tensors, name: tensors[name][:1]}, str(directory / WEIGHTS))
    with pytest.raises(ValueError, match="has shape"):
        load_auxiliary(directory)
    (directory / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable"):
        load_auxiliary(directory)
    with pytest.raises(ValueError, match="not a finished auxiliary model"):
        load_auxiliary(tmp_path)


def test_prefix_layer_map_is_checked() -> None:
    full = deep_llama(4)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="each of the 4 layers"):
        PrefixClassifier(full, 2, generator=gen, layer_map=(0, 1))
    with pytest.raises(ValueError, match="unused"):
        PrefixClassifier(full, 2, generator=gen, layer_map=(0, 0, 2, 2))
    model = PrefixClassifier(full, 2, generator=gen, layer_map=(0, 0, 1, 1))
    assert np.asarray(model.trainable_state()["prefix"]).shape[0] == 2


def test_the_cache_key_holds_the_recipe_and_nothing_of_the_protocol() -> None:
    from fedpeft.config import load_config
    from fedpeft.fedsp.recipe import _recipe_key

    full = deep_llama(4)
    plan = layer_plan(4)

    def key(*extra: str) -> dict[str, object]:
        cfg = load_config(None, ["fedsp.enabled=true", *extra])
        return _recipe_key(cfg, full, plan)

    assert key() == key("fedsp.server_steps=3", "fedsp.model_steps=2", "seed=7")
    assert key() != key("fedsp.distill_steps=10")
    assert key("fedsp.distill=false") == key(
        "fedsp.distill=false", "fedsp.distill_steps=10"
    )


def test_the_logit_term_adds_the_next_token_kl() -> None:
    from fedpeft.fedsp.distill import hidden_error
    from fedpeft.models.tokenized import Batch

    full = deep_llama(4)
    plan = layer_plan(4)
    aux = build_auxiliary(full, plan)
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 8, 1]])
    batch = Batch(ids, torch.ones_like(ids), torch.zeros(2, dtype=torch.long))
    plain = float(hidden_error(full, aux, plan, batch, "fp32"))
    with_kl = float(hidden_error(full, aux, plan, batch, "fp32", logit_kd=1.0))
    assert with_kl > plain > 0.0
    # the full model against itself: no error at all
    same = build_auxiliary(full, layer_plan(4, share=False))
    assert (
        float(hidden_error(full, same, layer_plan(4, share=False), batch, "fp32", 1.0))
        < 1e-6
    )
