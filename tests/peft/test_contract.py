"""The contract every registered PEFT method keeps, run over every method on the
real MiniLM encoder and (where the method supports it) a tiny Llama decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from fedpeft.config import ConfigError
from fedpeft.experiment import Experiment
from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch, tokenize
from fedpeft.peft import PEFT_METHODS, AdapterClassifier, build_adapter
from fedpeft.peft.export import export_adapter
from fedpeft.peft.vision import IMAGE_ONLY
from fedpeft.wire import serialize

# Image-only methods keep the contract in tests/peft/test_vision.py.
METHODS = sorted(m for m in PEFT_METHODS if m not in IMAGE_ONLY)
PEFT_NATIVE = ["prompt", "prefix", "lora", "ia3", "blackbox"]
SMALL: dict[str, dict[str, Any]] = {  # each method takes only its own options
    "prompt": {"prompt_length": 3},
    "prefix": {"prefix_length": 3},
    "lora": {"rank": 2},
    "blackbox": {"prompt_length": 3, "intrinsic_dim": 16},
}


def make(method: str, backbone: Backbone, seed: int = 0) -> AdapterClassifier:
    return build_adapter(
        method,
        backbone,
        3,
        torch.Generator().manual_seed(seed),
        **SMALL.get(method, {}),
    )


def batch_of(exp: Experiment) -> Batch:
    return exp.train.batch(np.arange(6))


def perturb(adapter: AdapterClassifier, seed: int = 1) -> None:
    """Move every trainable tensor away from its (often identity) init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_every_method_is_covered() -> None:
    assert {"prompt", "prefix", "lora", "ia3", "bitfit", "full"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_state_round_trips_and_counts(method: str, tiny_experiment: Experiment) -> None:
    adapter = make(method, tiny_experiment.backbone)
    state = adapter.trainable_state()

    perturb(adapter)
    adapter.load_trainable_state(state)

    again = adapter.trainable_state()
    assert state.keys() == again.keys()
    assert all(np.array_equal(state[k], again[k]) for k in state)
    assert adapter.num_trainable() == sum(v.size for v in state.values())
    assert adapter.payload_bytes() == len(serialize(state))
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.parametrize("method", METHODS)
def test_rejects_wrong_state(method: str, tiny_experiment: Experiment) -> None:
    adapter = make(method, tiny_experiment.backbone)
    state = adapter.trainable_state()
    name = next(iter(state))
    bad_shape = {**state, name: np.zeros((*state[name].shape, 2), np.float32)}
    with pytest.raises(ValueError, match="shape"):
        adapter.load_trainable_state(bad_shape)
    with pytest.raises(ValueError, match="keys"):
        adapter.load_trainable_state({k: v for k, v in state.items() if k != name})


@pytest.mark.parametrize("method", METHODS)
def test_seeded_init_is_deterministic(method: str, tiny_experiment: Experiment) -> None:
    a = make(method, tiny_experiment.backbone, seed=3).trainable_state()
    b = make(method, tiny_experiment.backbone, seed=3).trainable_state()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", METHODS)
def test_training_touches_only_the_payload(
    method: str, tiny_experiment: Experiment
) -> None:
    backbone = tiny_experiment.backbone
    frozen = {n: p.clone() for n, p in backbone.model.named_parameters()}
    adapter, other = make(method, backbone), make(method, backbone)
    batch = batch_of(tiny_experiment)
    before_other = other(batch).detach()
    before = adapter.trainable_state()
    optimizer = torch.optim.SGD(adapter.trainable_parameters().values(), lr=0.5)

    loss = F.cross_entropy(adapter(batch), batch.labels % 3)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()

    after = adapter.trainable_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    for name, param in backbone.model.named_parameters():
        assert torch.equal(param, frozen[name]), f"{method} changed {name}"
        assert param.grad is None
    torch.testing.assert_close(other(batch), before_other)  # adapters independent


@pytest.mark.parametrize("method", ["lora", "ia3", "bitfit"])
def test_injected_methods_start_as_the_backbone(
    method: str, tiny_experiment: Experiment
) -> None:
    """LoRA (B = 0), IA3 (ones) and BitFit (cloned biases) start as identity
    and share, not copy, the backbone's weights."""
    backbone = tiny_experiment.backbone
    adapter, plain = make(method, backbone), make("full", backbone)
    batch = batch_of(tiny_experiment)

    with torch.no_grad():
        torch.testing.assert_close(adapter.features(batch), plain.features(batch))

    shared = {p.data_ptr() for p in backbone.model.parameters()}
    frozen = [p for p in adapter.parameters() if not p.requires_grad]
    assert frozen and all(p.data_ptr() in shared for p in frozen)


@pytest.mark.parametrize("method", PEFT_NATIVE)
def test_export_loads_in_plain_peft_with_the_same_logits(
    method: str, tiny_experiment: Experiment, tmp_path: Path
) -> None:
    from transformers import AutoModel

    from fedpeft.models.loading import resolve_backbone_path
    from peft import PeftModel

    adapter = make(method, tiny_experiment.backbone)
    perturb(adapter)
    batch = batch_of(tiny_experiment)
    with torch.no_grad():
        expected = adapter(batch)

    export_adapter(adapter, tmp_path)
    base = AutoModel.from_pretrained(
        resolve_backbone_path("minilm-l6"), local_files_only=True
    )
    model = PeftModel.from_pretrained(base, tmp_path).eval()
    info = json.loads((tmp_path / "fedpeft.json").read_text())
    head = load_file(str(tmp_path / "head.safetensors"))
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        hidden = out.last_hidden_state[:, info["virtual_tokens"] :]
        mask = batch.attention_mask.unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        logits = pooled @ head["weight"].T + head["bias"]

    assert info["format"] == "peft" and info["pooling"] == "mean"
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_bitfit_export_is_base_model_tensors(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    from transformers import AutoModel

    from fedpeft.models.loading import resolve_backbone_path

    adapter = make("bitfit", tiny_experiment.backbone)
    perturb(adapter)
    batch = batch_of(tiny_experiment)
    export_adapter(adapter, tmp_path)
    base = AutoModel.from_pretrained(
        resolve_backbone_path("minilm-l6"), local_files_only=True
    )
    _missing, unexpected = base.load_state_dict(
        load_file(str(tmp_path / "model_tensors.safetensors")), strict=False
    )
    assert not unexpected
    with torch.no_grad():
        ours = adapter.features(batch)
        theirs = adapter.backbone.pool(
            base(
                **{"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            ).last_hidden_state,
            batch.attention_mask,
        )
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


DECODER_METHODS = ["prompt", "prefix", "lora", "ia3", "full"]


@pytest.mark.parametrize("method", DECODER_METHODS)
def test_methods_train_on_a_decoder(method: str, tiny_decoder: Backbone) -> None:
    data = tokenize(
        tiny_decoder, ["the movie was good", "bad", "the bad movie"], [0, 1, 0], 8
    )
    batch = data.batch(np.arange(3))
    adapter = build_adapter(
        method,
        tiny_decoder,
        2,
        torch.Generator().manual_seed(0),
        label_names=("positive", "negative"),
        **SMALL.get(method, {}),
    )
    logits = adapter(batch)
    loss = F.cross_entropy(logits, batch.labels)
    loss.backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in adapter.trainable_parameters().values()]
    assert logits.shape == (3, 2)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_decoder_head_starts_as_the_verbalizer(tiny_decoder: Backbone) -> None:
    """An untrained decoder classifier scores the label words with the LM head
    at the last real token: zero-shot next-token classification."""
    data = tokenize(tiny_decoder, ["the movie was good", "bad movie"], [0, 1], 8)
    batch = data.batch(np.arange(2))
    adapter = build_adapter(
        "lora",
        tiny_decoder,
        2,
        torch.Generator().manual_seed(0),
        label_names=("positive", "negative"),
    )
    ids = tiny_decoder.verbalizer_ids(("positive", "negative"))
    with torch.no_grad():
        lm = tiny_decoder.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        )
        last = batch.attention_mask.sum(1) - 1
        expected = lm.logits[torch.arange(2), last][:, ids]
        torch.testing.assert_close(adapter(batch), expected, atol=1e-5, rtol=1e-5)


def test_bitfit_refuses_a_model_without_biases(tiny_decoder: Backbone) -> None:
    with pytest.raises(ValueError, match="no bias terms"):
        build_adapter("bitfit", tiny_decoder, 2, torch.Generator().manual_seed(0))


def test_an_option_of_another_method_is_refused(tiny_experiment: Experiment) -> None:
    with pytest.raises(ConfigError, match=r"peft\.rank is not an option of peft\.m"):
        build_adapter("ia3", tiny_experiment.backbone, 2, torch.Generator(), rank=2)


@pytest.mark.parametrize("method", METHODS)
def test_adapter_classes_take_only_their_own_options(
    method: str, tiny_experiment: Experiment
) -> None:
    """The constructors no longer swallow unknown options: the registry's
    config class is the only way in."""
    factory = PEFT_METHODS.factory(method)
    with pytest.raises(TypeError, match="not_an_option"):
        factory(
            tiny_experiment.backbone,
            2,
            generator=torch.Generator(),
            not_an_option=1,
        )
