"""Images on a vision backbone: the CNN backbone, each image method training
only its own tensors, LoRA and visual prompting against hand values, config
refusals, and a federated run on Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedpeft.config import ConfigError, load_config
from fedpeft.experiment import (
    VISION_METHODS,
    Experiment,
    check_names,
)
from fedpeft.seeding import stream
from tests.conftest import needs_fashion_mnist
from tests.peft.conftest import IMAGES

pytestmark = needs_fashion_mnist


def test_the_backbone_and_the_image_batches(images: Experiment) -> None:
    backbone = images.backbone
    assert (backbone.kind, backbone.hidden_size) == ("vision", 1280)
    # EfficientNet-Lite0's 4,652,008 less its ImageNet classifier (1280·1000 + 1000)
    assert backbone.num_parameters == 4_652_008 - 1_281_000
    batch = images.test.batch(np.arange(5))
    assert batch.input_ids.shape == (5, 28, 28, 1)
    assert batch.attention_mask.shape == (5, 1)
    assert (
        images.corpus.label_names[images.test.labels[0]]
        == (images.corpus.test.label_names[images.corpus.test.labels[0]])
    )
    x = backbone.embed(batch.input_ids)
    assert x.shape == (5, 3, 32, 32)
    hidden = backbone.encode(x, batch.attention_mask)
    assert hidden.shape == (5, 1, 1280)
    torch.testing.assert_close(
        backbone.pool(hidden, batch.attention_mask), hidden[:, 0]
    )


@pytest.mark.parametrize(
    ("method", "trainable"),
    [
        ("head", 12_810),
        ("visual-prompt", 12_810 + 3 * 32 * 32),
        ("bitfit", None),  # every batch norm's shift
        ("lora", None),  # A and B of the 32 1×1 convolutions
        ("full", 4_652_008 - 1_281_000 + 12_810),
    ],
)
def test_each_image_method_trains_only_its_own_tensors(
    images: Experiment, method: str, trainable: int | None
) -> None:
    from fedpeft.client import train_adapter

    model = images.new_adapter(method)
    own = model.trainable_parameters()
    if trainable is not None:
        assert sum(p.numel() for p in own.values()) == trainable
    if method == "bitfit":
        bn = [
            m
            for m in images.backbone.model.modules()
            if isinstance(m, torch.nn.BatchNorm2d)
        ]
        assert set(own) - {"head.weight", "head.bias"} == {
            n for n in own if n.endswith(".bias") and n.startswith("body.")
        }
        assert len(own) == len(bn) + 2
    if method == "lora":
        assert len(own) == 2 * 32 + 2
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen = {
        k: v.detach().clone() for k, v in images.backbone.model.state_dict().items()
    }
    cfg = images.config.client.model_copy(update={"local_steps": 2})
    train_adapter(model, images.clients[0].train, cfg, stream(0, "baseline", 99))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(own)
    for name, tensor in images.backbone.model.state_dict().items():
        assert torch.equal(frozen[name], tensor), f"the shared backbone's {name} moved"


def test_lora_and_the_visual_prompt_start_as_the_frozen_network(
    images: Experiment,
) -> None:
    """B = 0 and a zero frame: the adapted features equal the frozen ones;
    a LoRA convolution equals the convolution with the merged weight."""
    from fedpeft.peft.vision.model import LoraConv1x1

    batch = images.test.batch(np.arange(4))
    probe = images.new_adapter("head")
    with torch.no_grad():
        base = probe.features(batch)
        for method in ("lora", "visual-prompt"):
            torch.testing.assert_close(images.new_adapter(method).features(batch), base)

    conv = torch.nn.Conv2d(6, 5, 1, bias=False)
    lora = LoraConv1x1(
        conv, rank=2, scale=0.5, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        lora.lora_B.normal_()
        x = torch.randn(3, 6, 4, 4)
        merged = conv.weight[:, :, 0, 0] + 0.5 * lora.lora_B @ lora.lora_A
        want = torch.einsum("oi,bihw->bohw", merged, x)
        torch.testing.assert_close(lora(x), want, rtol=1e-5, atol=1e-5)

    prompt = images.new_adapter("visual-prompt", pad=3)
    frame = prompt.frame[0, 0]
    assert frame[3:-3, 3:-3].sum() == 0 and frame.sum() == 32 * 32 - 26 * 26
    with pytest.raises(ValueError, match="leaves no image"):
        images.new_adapter("visual-prompt", pad=16)


def test_text_and_image_pieces_do_not_mix(tmp_path: Path) -> None:
    def check(*extra: str) -> None:
        check_names(load_config(None, [*extra, f"output_dir={tmp_path}"]))

    with pytest.raises(ConfigError, match="text backbones only"):
        check(*IMAGES, "peft.method=prefix")
    with pytest.raises(ConfigError, match="needs a vision backbone"):
        check("peft.method=visual-prompt")
    with pytest.raises(ConfigError, match="is images but"):
        check("data.corpus=fashion-mnist")
    with pytest.raises(ConfigError, match="is text but"):
        check("model.backbone=efficientnet-lite0", "peft.method=head")


@pytest.mark.slow
def test_a_federated_image_run(tmp_path: Path) -> None:
    from fedpeft.engine.runner import run_experiment

    cfg = load_config(
        None,
        [
            *IMAGES,
            "peft.method=visual-prompt",
            "federation.rounds=2",
            'baselines.run=["linear-probe"]',
            f"output_dir={tmp_path}",
        ],
    )
    summary = run_experiment(cfg)
    # 10 classes: chance is 10%; the class-means warm start alone is far above
    assert summary["federated"]["final_accuracy"] > 0.4
    assert summary["baselines"]["linear-probe"]["test_accuracy"] > 0.4
    assert summary["corpus"] == "fashion-mnist"


@pytest.mark.parametrize("method", VISION_METHODS)
def test_image_methods_keep_the_adapter_contract(
    images: Experiment, method: str
) -> None:
    """As tests/peft/test_contract.py checks for text: the state round-trips,
    a wrong state is refused, the seeded init repeats, unknown options fail."""
    from fedpeft.peft import PEFT_METHODS, build_adapter
    from fedpeft.wire import serialize

    def make(seed: int) -> Any:
        return build_adapter(
            method, images.backbone, 10, torch.Generator().manual_seed(seed)
        )

    adapter = make(3)
    state = adapter.trainable_state()
    with torch.no_grad():
        for p in adapter.trainable_parameters().values():
            p.add_(0.05)
    adapter.load_trainable_state(state)
    again = adapter.trainable_state()
    assert all(np.array_equal(state[k], again[k]) for k in state)
    assert adapter.payload_bytes() == len(serialize(state))
    assert all(
        np.array_equal(state[k], v) for k, v in make(3).trainable_state().items()
    )
    name = next(iter(state))
    with pytest.raises(ValueError, match="shape"):
        adapter.load_trainable_state(
            {**state, name: np.zeros((*state[name].shape, 2), np.float32)}
        )
    with pytest.raises(TypeError, match="not_an_option"):
        PEFT_METHODS.factory(method)(
            images.backbone, 10, generator=torch.Generator(), not_an_option=1
        )


@pytest.mark.parametrize("method", VISION_METHODS)
def test_image_adapters_are_built_on_the_backbones_device(
    images: Experiment, method: str
) -> None:
    import copy

    from fedpeft.models.vision import VisionBackbone
    from fedpeft.peft import build_adapter

    real = images.backbone
    meta = VisionBackbone(
        real.name, copy.deepcopy(real.model).to("meta"), None, "vision", 32
    )
    adapter = build_adapter(method, meta, 3, torch.Generator().manual_seed(0))
    assert {p.device.type for p in adapter.parameters()} == {"meta"}
    assert {b.device.type for b in adapter.buffers()} <= {"meta"}
