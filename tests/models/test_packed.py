"""Packed frozen bf16 linear layers compute what nn.Linear computes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from fedpeft.models.loading import load_backbone
from fedpeft.models.packed import PackedLinear, pack_linear_layers, packing_available

pytestmark = pytest.mark.skipif(
    not packing_available(), reason="this torch build has no oneDNN bf16 linear"
)


def _frozen(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
        if bias:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer.to(torch.bfloat16).requires_grad_(False)


def _inputs(*shape: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(*shape, generator=gen).to(torch.bfloat16)


@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_bit_equal_to_linear(bias: bool) -> None:
    layer = _frozen(24, 40, bias)
    packed = PackedLinear(layer)
    x = _inputs(3, 5, 24)  # (batch, seq, in): leading axes are kept
    with torch.inference_mode():
        out = packed(x)
        assert out.shape == (3, 5, 40)
        assert torch.equal(out, layer(x))


def test_input_gradient_is_bit_equal_to_linears() -> None:
    layer = _frozen(24, 40)
    packed = PackedLinear(layer)
    x = _inputs(6, 24).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    upstream = _inputs(6, 40)
    out = packed(x)
    ref = layer(x_ref)
    assert out.requires_grad and torch.equal(out.detach(), ref.detach())
    out.backward(upstream)
    ref.backward(upstream)
    assert x.grad is not None and x_ref.grad is not None
    assert torch.equal(x.grad, x_ref.grad)
    assert layer.weight.grad is None  # frozen: nothing reaches the weight


def test_a_training_layer_is_refused() -> None:
    layer = _frozen(4, 4).requires_grad_(True)
    with pytest.raises(ValueError, match="frozen"):
        PackedLinear(layer)


def test_state_dict_pickle_and_deepcopy_keep_the_layer() -> None:
    layer = _frozen(8, 12)
    packed = PackedLinear(layer)
    x = _inputs(2, 8)
    with torch.no_grad():
        want = packed(x)  # packs the forward weight
    assert set(packed.state_dict()) == {"weight", "bias"}
    for twin in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
        assert isinstance(twin, PackedLinear)
        assert twin._forward_weight is None  # rebuilt where it lands
        with torch.no_grad():
            assert torch.equal(twin(x), want)


def test_the_bf16_body_of_a_cpu_backbone_is_packed() -> None:
    backbone = load_backbone("minilm-l6")
    body = backbone.bf16_body
    packed = [m for m in body.modules() if isinstance(m, PackedLinear)]
    assert packed and not any(type(m) is nn.Linear for m in body.modules())
    assert not any(isinstance(m, PackedLinear) for m in backbone.body.modules())
    assert all(not p.requires_grad for p in body.parameters())


def test_pack_linear_layers_leaves_fp32_and_trainable_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _frozen(4, 4), nn.Linear(4, 4))
    model[2] = model[2].to(torch.bfloat16)  # bf16 but trainable
    assert pack_linear_layers(model) == 1
    assert [type(m).__name__ for m in model] == ["Linear", "PackedLinear", "Linear"]
