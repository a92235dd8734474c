"""The soft-prompt adapter on the real backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpeft.config import ConfigError
from fedpeft.models.pooling import mean_pool
from fedpeft.peft import build_adapter

pytestmark = pytest.mark.slow


def test_payload_is_prompt_and_head(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    model = tiny_experiment.new_adapter("prompt")
    state = model.trainable_state()
    dim, classes = tiny_experiment.backbone.hidden_size, tiny_experiment.num_classes
    assert {k: v.shape for k, v in state.items()} == {
        "prompt": (4, dim),
        "head.weight": (classes, dim),
        "head.bias": (classes,),
    }
    assert model.num_trainable() == 4 * dim + classes * dim + classes
    assert all(not p.requires_grad for p in tiny_experiment.backbone.model.parameters())


def test_load_rejects_wrong_shapes_and_nan(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    model = tiny_experiment.new_adapter("prompt")
    state = model.trainable_state()
    with pytest.raises(ValueError, match="shape"):
        model.load_trainable_state({**state, "prompt": np.zeros((5, 3), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        model.load_trainable_state(
            {**state, "head.bias": np.full_like(state["head.bias"], np.nan)}
        )
    with pytest.raises(ValueError, match="missing"):
        model.load_trainable_state({"prompt": state["prompt"]})


def test_pooling_excludes_prompt_positions(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    model = tiny_experiment.new_adapter("prompt")
    batch = tiny_experiment.test.batch(np.arange(3))
    bb = tiny_experiment.backbone
    with torch.no_grad():
        tokens = bb.embed(batch.input_ids)
        prompt = model.prompt.expand(3, -1, -1)
        mask = torch.cat([torch.ones(3, 4, dtype=torch.long), batch.attention_mask], 1)
        hidden = bb.encode(torch.cat([prompt, tokens], 1), mask)
        expected = mean_pool(hidden[:, 4:], batch.attention_mask)
        np.testing.assert_allclose(model.features(batch), expected, atol=1e-5)


def test_prompt_init_from_label_words(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    model = build_adapter(
        "prompt",
        tiny_experiment.backbone,
        2,
        g,
        prompt_length=3,
        prompt_init="labels",
        label_names=("good", "bad"),
    )
    table = tiny_experiment.backbone.word_embeddings.weight
    good = tiny_experiment.backbone.tokenizer("good", add_special_tokens=False)[
        "input_ids"
    ]
    torch.testing.assert_close(model.prompt[0], table[good[0]])


def test_unknown_method_lists_the_choices(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"Did you mean 'lora'.*prompt"):
        build_adapter("lora-x", tiny_experiment.backbone, 2, torch.Generator())
