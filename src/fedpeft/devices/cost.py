"""Analytic cost of one client's local round with a given adapter option.

The model is deliberately simple and every constant is a named module value so
that it can be calibrated against measurements. For a transformer with ``L``
layers, hidden size ``h``, intermediate size ``i``, ``a`` heads, ``P`` weights
per layer, a local round over ``T = num_examples * epochs * S`` tokens with
``S = seq_len + extra_tokens`` and gradients flowing through the top ``d``
layers (``d = backprop_depth``) costs:

Memory (bytes)::

    N * bytes_per_param_backbone                       # frozen weights
    + (d + WORKING_LAYERS) * A * BYTES_PER_ACTIVATION  # stored + transient
    + trainable * ADAPTER_STATE_TENSORS * BYTES_PER_STATE_VALUE  # AdamW

where ``A = batch * S * (9 h + 2 i + 2.5 a S)`` is the number of activation
values one layer keeps for backward: Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (arXiv:2205.05198),
sec. 4.1, eq. (1), ``sbh(34 + 5as/h)`` bytes at 2 bytes a value with 1-byte
dropout masks and ``i = 4h``, rewritten in values for a general ``i``
(:data:`ACT_VALUES_PER_HIDDEN`, :data:`ACT_VALUES_PER_INTERMEDIATE`,
:data:`ACT_VALUES_PER_HEAD_KEY`). Layers below the backprop depth run under
no-grad and keep nothing; one layer of transient values
(:data:`WORKING_LAYERS`) covers that forward and the gradient buffers of
backward. Gated (SwiGLU) MLPs keep about one more ``i``; ignored. Trainable
backbone weights (top layers, BitFit) are counted in both the first and last
terms, an over-estimate of ``trainable * bytes_per_param_backbone``.

FLOPs::

    T * (2 N_L + 2 L S h)            # forward through all layers
    + T * (2 P + 2 S h) * d          # activation grads through the top d layers
    + T * 2 * trainable              # weight grads of the trainable weights

This is the 6N rule (Kaplan et al. 2020, arXiv:2001.08361, sec. 2.1, with the
attention term ``2 L S h`` per token) with the frozen-weight saving: backward
through a frozen weight needs only the activation gradient (≈ 2 FLOPs per
weight per token), not also the weight gradient (another 2). ``N_L = L * P``
counts the non-embedding weights; embedding lookups are free. An adapter's own
forward and activation-gradient FLOPs are left out: tiny for LoRA, prompts and
IA3, and already in the backbone terms when the trainable weights are backbone
weights (top layers, full fine-tuning, which comes out at exactly 6N).

Bytes: the trainable parameters go down and come back up as float32, i.e.
``trainable * PAYLOAD_BYTES_PER_PARAM`` each way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from fedpeft.devices.profiles import DeviceProfile

ACT_VALUES_PER_HIDDEN = 9.0
"""Activation values kept per token per layer, per unit of hidden size."""
ACT_VALUES_PER_INTERMEDIATE = 2.0
"""Activation values kept per token per layer, per unit of intermediate size."""
ACT_VALUES_PER_HEAD_KEY = 2.5
"""Attention values kept per token per layer, per head and key position."""
BYTES_PER_ACTIVATION = 4
"""Bytes per stored activation value (float32 training)."""
WORKING_LAYERS = 1
"""Layers' worth of transient activations on top of the stored ones."""
ADAPTER_STATE_TENSORS = 4
"""Tensors per trainable parameter: value, gradient, AdamW first and second moment."""
BYTES_PER_STATE_VALUE = 4
"""Bytes per adapter state value (float32)."""
FORWARD_FLOPS_PER_PARAM = 2.0
"""Forward FLOPs per weight per token (one multiply-add)."""
ACTIVATION_GRAD_FLOPS_PER_PARAM = 2.0
"""Backward FLOPs per weight per token for the input (activation) gradient."""
WEIGHT_GRAD_FLOPS_PER_PARAM = 2.0
"""Backward FLOPs per trainable weight per token for its own gradient."""
ATTENTION_FLOPS_PER_KEY_HIDDEN = 2.0
"""Attention-score FLOPs per token per layer, per key position and hidden unit."""
PAYLOAD_BYTES_PER_PARAM = 4
"""Bytes per trainable parameter on the wire (float32), each way."""

_GATED_MLP_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "gemma", "phi3"})
_LEARNED_POSITION_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra"})


@dataclass(frozen=True)
class BackboneDims:
    """Sizes of a frozen transformer backbone.

    Attributes:
        num_params: Weights of embeddings plus transformer blocks (no LM head).
        num_layers: Transformer blocks.
        hidden: Hidden size.
        intermediate: MLP intermediate size.
        vocab: Vocabulary size.
        heads: Attention heads.
    """

    num_params: int
    num_layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden", "intermediate", "vocab", "heads"):
            _check_int(name, getattr(self, name), 1)
        _check_int("num_params", self.num_params, self.vocab * self.hidden + 1)

    @property
    def layer_params(self) -> float:
        """Weights per block: ``(num_params - vocab * hidden) / num_layers``."""
        return (self.num_params - self.vocab * self.hidden) / self.num_layers

    @classmethod
    def from_hf_config(cls, config: Any, num_params: int | None = None) -> BackboneDims:
        """Dimensions from a Hugging Face config (BERT- or Llama-style).

        Reads ``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
        ``num_attention_heads`` and ``vocab_size``. Without ``num_params`` the
        weight count is estimated: token embeddings, learned positions for
        BERT-like ``model_type``, and per block ``2h^2 + 2h * kv`` attention
        weights (``kv`` = ``num_key_value_heads * head_dim``) plus 2 (3 for
        gated MLPs, e.g. Llama) ``h * i`` matrices; biases and norms ignored.

        Args:
            config: A ``transformers.PretrainedConfig`` or any object with the
                attributes above.
            num_params: Exact weight count, e.g. ``sum(p.numel() for p in
                model.parameters())``; overrides the estimate.

        Raises:
            ValueError: A required attribute is missing.
        """
        missing = [n for n in _HF_NAMES if getattr(config, n, None) is None]
        if missing:
            raise ValueError(f"config lacks {missing}; pass a BERT- or Llama-style one")
        layers, hidden, inter, heads, vocab = (
            int(getattr(config, n)) for n in _HF_NAMES
        )
        dims = cls(vocab * hidden + 1, layers, hidden, inter, vocab, heads)
        return replace(dims, num_params=num_params or _estimate_params(config, dims))


_HF_NAMES = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "vocab_size",
)


def _estimate_params(config: Any, dims: BackboneDims) -> int:
    h, heads = dims.hidden, dims.heads
    model_type = getattr(config, "model_type", "")
    kv = int(getattr(config, "num_key_value_heads", None) or heads) * (h // heads)
    mlp = (3 if model_type in _GATED_MLP_TYPES else 2) * h * dims.intermediate
    embed = dims.vocab * h
    if model_type in _LEARNED_POSITION_TYPES:
        positions = getattr(config, "max_position_embeddings", 0) or 0
        embed += (positions + (getattr(config, "type_vocab_size", 0) or 0)) * h
    return embed + dims.num_layers * (2 * h * h + 2 * h * kv + mlp)


@dataclass(frozen=True)
class AdapterOption:
    """One adapter configuration a client may train.

    Attributes:
        method: PEFT method, e.g. ``"prompt"``, ``"prefix"``, ``"lora"``,
            ``"ia3"``, ``"bitfit"``, ``"top-layers"``.
        size: Method size: LoRA rank, prompt/prefix length or tuned layers (>= 0).
        trainable_params: Trainable weights, including any classifier head.
        extra_tokens: Tokens the method adds to every sequence (prompt length).
            Prefix key/values are counted as full tokens too, an over-estimate.
        backprop_depth: Top layers gradients flow through; ``None`` means all.
            Prompt tuning needs all layers (the gradient reaches the input);
            tuning only the top ``k`` layers needs ``k``.
    """

    method: str
    size: int
    trainable_params: int
    extra_tokens: int = 0
    backprop_depth: int | None = None

    def __post_init__(self) -> None:
        _check_int("size", self.size, 0)
        _check_int("trainable_params", self.trainable_params, 0)
        _check_int("extra_tokens", self.extra_tokens, 0)
        if self.backprop_depth is not None:
            _check_int("backprop_depth", self.backprop_depth, 0)

    @property
    def label(self) -> str:
        """Short name such as ``"lora-8"``, or ``"lora-8@top2"`` for a method
        confined to the top layers."""
        base = f"{self.method}-{self.size}"
        if self.backprop_depth is None or self.method == "top-layers":
            return base
        return f"{base}@top{self.backprop_depth}"


@dataclass(frozen=True)
class ClientCost:
    """Predicted cost of one local round.

    Attributes:
        memory_bytes: Peak training memory.
        flops: Floating-point operations of the whole round.
        upload_bytes: Client-to-server payload.
        download_bytes: Server-to-client payload.
    """

    memory_bytes: int
    flops: float
    upload_bytes: int
    download_bytes: int


def estimate_cost(
    dims: BackboneDims,
    option: AdapterOption,
    *,
    batch_size: int,
    seq_len: int,
    num_examples: int,
    epochs: int = 1,
    bytes_per_param_backbone: float = 4,
) -> ClientCost:
    """Predict memory, FLOPs and bytes of one local round (module docstring).

    Args:
        dims: Backbone sizes.
        option: The adapter the client trains.
        batch_size: Examples per step (>= 1).
        seq_len: Input tokens per example before ``option.extra_tokens`` (>= 1).
        num_examples: The client's training examples (>= 0).
        epochs: Local epochs (>= 1).
        bytes_per_param_backbone: Storage of each frozen weight (4 fp32, 2 bf16,
            0.5 for 4-bit quantised).

    Returns:
        The predicted :class:`ClientCost`.

    Raises:
        ValueError: An argument is out of range, or ``option.backprop_depth``
            exceeds ``dims.num_layers``.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("seq_len", seq_len, 1)
    _check_int("num_examples", num_examples, 0)
    _check_int("epochs", epochs, 1)
    if not bytes_per_param_backbone > 0:
        raise ValueError(
            f"bytes_per_param_backbone must be > 0, got {bytes_per_param_backbone}"
        )
    depth = _depth(dims, option)
    seq = seq_len + option.extra_tokens
    payload = option.trainable_params * PAYLOAD_BYTES_PER_PARAM
    memory = (
        dims.num_params * bytes_per_param_backbone
        + (depth + WORKING_LAYERS)
        * layer_activation_values(dims, batch_size, seq)
        * BYTES_PER_ACTIVATION
        + option.trainable_params * ADAPTER_STATE_TENSORS * BYTES_PER_STATE_VALUE
    )
    tokens = num_examples * epochs * seq
    flops = tokens * _flops_per_token(dims, option, seq, depth)
    return ClientCost(math.ceil(memory), float(flops), payload, payload)


def layer_activation_values(dims: BackboneDims, batch_size: int, seq: int) -> float:
    """Values one layer keeps for backward: ``b S (9h + 2i + 2.5 a S)``."""
    per_token = (
        ACT_VALUES_PER_HIDDEN * dims.hidden
        + ACT_VALUES_PER_INTERMEDIATE * dims.intermediate
        + ACT_VALUES_PER_HEAD_KEY * dims.heads * seq
    )
    return batch_size * seq * per_token


def _flops_per_token(
    dims: BackboneDims, option: AdapterOption, seq: int, depth: int
) -> float:
    attention = ATTENTION_FLOPS_PER_KEY_HIDDEN * seq * dims.hidden
    forward = dims.num_layers * (
        FORWARD_FLOPS_PER_PARAM * dims.layer_params + attention
    )
    backward = depth * (ACTIVATION_GRAD_FLOPS_PER_PARAM * dims.layer_params + attention)
    adapter = WEIGHT_GRAD_FLOPS_PER_PARAM * option.trainable_params
    return forward + backward + adapter


def _depth(dims: BackboneDims, option: AdapterOption) -> int:
    if option.backprop_depth is None:
        return dims.num_layers
    if option.backprop_depth > dims.num_layers:
        raise ValueError(
            f"{option.label}: backprop_depth={option.backprop_depth} exceeds the "
            f"backbone's {dims.num_layers} layers; use at most {dims.num_layers}"
        )
    return option.backprop_depth


def round_time(cost: ClientCost, profile: DeviceProfile) -> float:
    """Seconds of one round: ``flops/speed + upload/uplink + download/downlink``."""
    return (
        cost.flops / profile.speed
        + cost.upload_bytes / profile.uplink_bytes_per_s
        + cost.download_bytes / profile.downlink_bytes_per_s
    )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
