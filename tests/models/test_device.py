"""Device placement: the ``model.device`` setting, and every tensor an adapter,
a batch or a client-batched step makes following the backbone's device.

There is no GPU here, so placement is checked on PyTorch's ``meta`` device: an
operation mixing a meta tensor with a CPU tensor (other than a 0-d scalar)
raises, as it does with a CUDA tensor. Shapes flow, data does not, so these
tests cover building, stacking and optimizer steps, not full forwards
(transformers inspects mask values).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedpeft.client.batched import _clip_per_client
from fedpeft.client.stacked_adamw import StackedAdamW
from fedpeft.config import ConfigError, load_config
from fedpeft.experiment import Experiment, check_names
from fedpeft.models.backbone import Backbone
from fedpeft.models.device import describe_device, resolve_device
from fedpeft.models.precision import autocast
from fedpeft.peft import PEFT_METHODS, build_adapter
from fedpeft.peft.vision import IMAGE_ONLY

META = torch.device("meta")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")


@pytest.fixture
def without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu(without_gpu: None) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert describe_device(resolve_device("auto")) == "cpu"


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_a_missing_gpu_is_refused_with_the_fix(without_gpu: None, spec: str) -> None:
    with pytest.raises(ValueError, match=r"sees no CUDA GPU; set model\.device='cpu'"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", ""])
def test_unknown_spellings_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="choose cpu, cuda, cuda:N or auto"):
        resolve_device(spec)


def test_config_names_the_bad_device() -> None:
    with pytest.raises(ConfigError, match=r"model.device = 'tpu'.*choose cpu, cuda"):
        load_config(None, ["model.device=tpu"])


@no_gpu
def test_a_run_on_a_missing_gpu_fails_before_loading_anything() -> None:
    cfg = load_config(None, ["model.device=cuda"])
    with pytest.raises(ConfigError, match=r"model\.device='cuda'.*sees no CUDA GPU"):
        check_names(cfg)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_follows_the_device_type() -> None:
    x = torch.ones(2, 3)
    with autocast("bf16", "cpu"):
        assert (x @ x.T).dtype == torch.bfloat16
    ctx = autocast("bf16", torch.device("cuda", 0))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"


def test_batches_are_made_on_the_asked_device(tiny_experiment: Experiment) -> None:
    data = tiny_experiment.train
    batch = data.batch(np.arange(5), META)
    for t in (batch.input_ids, batch.attention_mask, batch.labels):
        assert t.device == META
    cpu = data.batch(np.arange(5))
    assert cpu.to("cpu") is cpu
    (idx, first), *_ = data.length_sorted_batches(4, META)
    assert first.input_ids.device == META and len(idx) == 4


@pytest.fixture(scope="module")
def meta_backbone(tiny_experiment: Experiment) -> Backbone:
    real = tiny_experiment.backbone
    return Backbone(
        real.name, copy.deepcopy(real.model).to(META), real.tokenizer, "encoder"
    )


OPTIONS: dict[str, dict[str, object]] = {
    "prompt": {"prompt_length": 3},
    "prefix": {"prefix_length": 3, "prefix_init": "random"},
    "lora": {"rank": 2},
}


@pytest.mark.parametrize(
    "method", sorted(m for m in PEFT_METHODS if m not in IMAGE_ONLY)
)
def test_adapters_are_built_on_the_backbones_device(
    method: str, meta_backbone: Backbone
) -> None:
    adapter = build_adapter(
        method,
        meta_backbone,
        3,
        torch.Generator().manual_seed(0),
        **OPTIONS.get(method, {}),
    )
    assert adapter.device == META
    assert {p.device for p in adapter.parameters()} == {META}
    state = {
        n: np.zeros(tuple(p.shape), np.float32)
        for n, p in adapter.trainable_parameters().items()
    }
    stacked = adapter.stack_states([state, state])
    assert {t.device for t in stacked.values()} == {META}


def test_stacked_optimizer_and_clipping_stay_on_the_device() -> None:
    params = {"w": torch.zeros(3, 4, device=META), "b": torch.zeros(3, device=META)}
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    _clip_per_client(grads, 1.0, 3)
    opt = StackedAdamW(params, {"w": 0.1, "b": 0.1}, weight_decay=0.01)
    active = torch.tensor([True, False, True], device=META)
    opt.step(grads, active)
    assert opt.steps.device == META
    assert {t.device for t in (*params.values(), *grads.values())} == {META}
