"""Prefix / deep prompt tuning (Li & Liang 2021, "Prefix-Tuning"; Liu et al.
2022, "P-Tuning v2").

Every layer attends to L trainable key/value vectors placed before the input,
``prefix`` of shape ``(layers, 2, kv_heads, L, head_dim)``; the real tokens'
final states are pooled as for the other methods. With ``prefix_projection`` the
prefix is reparameterised as in Li & Liang (§4.3): L embeddings ``(L, dim)``
pass through a two-layer tanh MLP to ``(L, layers·2·kv_heads·head_dim)``; the
MLP is then part of the payload. Initialisation ``"vocab"`` uses the keys and
values the backbone itself computes for L random vocabulary tokens (starting
from real activations works better than noise, Li & Liang §7.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier
from fedpeft.peft.shared import shared_copy

PREFIX_INITS = ("vocab", "random")


class PrefixClassifier(AdapterClassifier):
    """Per-layer key/value prefixes + pooling + linear head.

    Args:
        prefix_length: L, the number of prefix positions per layer.
        prefix_init: ``"vocab"`` (backbone keys/values of random vocabulary
            tokens) or ``"random"`` (normal, std 0.02·√head_dim).
        prefix_projection: Reparameterise through an MLP of width
            ``projection_dim``.
        projection_dim: Hidden width of that MLP.
        layer_map: Per backbone layer, the row of the stored prefix it uses
            (a prompt trained on a shallower auxiliary model served on the
            full one, :mod:`fedpeft.fedsp`); default: one row per layer.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        generator: torch.Generator,
        prefix_length: int = 10,
        prefix_init: str = "vocab",
        prefix_projection: bool = False,
        projection_dim: int = 128,
        label_names: tuple[str, ...] = (),
        layer_map: Sequence[int] | None = None,
    ) -> None:
        super().__init__(backbone, num_classes, generator, label_names)
        if prefix_length < 1:
            raise ValueError(f"peft.prefix_length={prefix_length}: must be >= 1")
        if prefix_init not in PREFIX_INITS:
            raise ValueError(
                f"peft.prefix_init={prefix_init!r}: choose one of "
                + ", ".join(PREFIX_INITS)
            )
        b = backbone
        rows = _check_layer_map(layer_map, b.num_layers)
        self.layer_map = None if layer_map is None else torch.tensor(list(layer_map))
        self.shape = (rows, 2, b.num_kv_heads, prefix_length, b.head_dim)
        self.projection = prefix_projection
        if prefix_projection:
            self._init_projection(prefix_length, projection_dim, generator)
        else:
            initial = (
                _vocab_prefix(backbone, prefix_length, generator)[self._first_layers()]
                if prefix_init == "vocab"
                else torch.randn(self.shape, generator=generator)
                * 0.02
                * b.head_dim**0.5
            )
            self.prefix = nn.Parameter(initial)

    def _init_projection(
        self, length: int, hidden: int, generator: torch.Generator
    ) -> None:
        table = self.backbone.word_embeddings.weight.detach()
        drawn = torch.randint(0, table.shape[0], (length,), generator=generator)
        self.prefix_tokens = nn.Parameter(table[drawn].clone().float())  # (L, dim)
        out = self.shape[0] * self.shape[1] * self.shape[2] * self.shape[4]
        self.mlp = nn.Sequential(
            nn.Linear(table.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, out)
        )
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                assert isinstance(layer, nn.Linear)
                layer.weight.normal_(0.0, 0.02, generator=generator)
                layer.bias.zero_()

    def _first_layers(self) -> list[int]:
        """Per stored row, the first backbone layer that uses it."""
        if self.layer_map is None:
            return list(range(self.shape[0]))
        mapped = self.layer_map.tolist()
        return [mapped.index(row) for row in range(self.shape[0])]

    def prefix_values(self) -> torch.Tensor:
        """The prefix ``(layers, 2, kv_heads, L, head_dim)`` of every backbone
        layer (projected, and spread over the layers by ``layer_map``, if so)."""
        stored: torch.Tensor
        if not self.projection:
            stored = self.prefix
        else:
            rows, two, heads, length, dim = self.shape
            flat: torch.Tensor = self.mlp(self.prefix_tokens)  # (L, rows·2·heads·dim)
            stored = flat.view(length, rows, two, heads, dim).permute(1, 2, 3, 0, 4)
        if self.layer_map is None:
            return stored
        return stored[self.layer_map.to(stored.device)]

    def peft_model(self) -> Any:
        """peft prefix tuning (feature extraction) holding this prefix, the
        projection (if any) already applied: peft's ``prompt_embeddings`` is
        ``(L, layers·2·kv_heads·head_dim)`` in (layer, key/value, head, dim)
        order."""
        from peft import PrefixTuningConfig, get_peft_model

        b = self.backbone
        _rows, _two, heads, length, dim = self.shape
        layers = b.num_layers
        config = PrefixTuningConfig(
            task_type="FEATURE_EXTRACTION",
            num_virtual_tokens=length,
            token_dim=heads * dim,
            num_transformer_submodules=1,
            num_attention_heads=heads,
            num_layers=layers,
        )
        with torch.random.fork_rng(devices=[]):
            model = get_peft_model(shared_copy(b.body), config)
        flat = self.prefix_values().detach().permute(3, 0, 1, 2, 4).reshape(length, -1)
        with torch.no_grad():
            _prompt_table(model).copy_(flat)
        return model

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        tokens = self.backbone.embed(batch.input_ids)  # (batch, seq, dim)
        prefix = self.prefix_values().to(tokens.dtype)
        pairs = [(layer[0], layer[1]) for layer in prefix]  # per layer (H, L, hd)
        return self.backbone.encode(tokens, batch.attention_mask, pairs)

    def per_example_logits(
        self, batch: Batch, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Logits where example i uses its own prefix (or its own projection
        MLP and prefix tokens): every tensor in ``params`` has a leading batch
        dimension."""
        if self.projection:
            tokens = params["prefix_tokens"]  # (B, L, dim)
            hidden = torch.tanh(
                torch.einsum("bld,bhd->blh", tokens, params["mlp.0.weight"])
                + params["mlp.0.bias"][:, None]
            )
            flat = (
                torch.einsum("blh,boh->blo", hidden, params["mlp.2.weight"])
                + params["mlp.2.bias"][:, None]
            )  # (B, L, layers·2·heads·dim)
            layers, two, heads, length, dim = self.shape
            prefix = flat.view(-1, length, layers, two, heads, dim).permute(
                0, 2, 3, 4, 1, 5
            )  # (B, layers, 2, heads, L, dim)
        else:
            prefix = params["prefix"]  # (B, rows, 2, heads, L, dim)
        if self.layer_map is not None:
            prefix = prefix[:, self.layer_map.to(prefix.device)]  # (B, layers, ...)
        embeds = self.backbone.embed(batch.input_ids)  # (B, seq, dim)
        prefix = prefix.to(embeds.dtype)
        pairs = [(prefix[:, i, 0], prefix[:, i, 1]) for i in range(prefix.shape[1])]
        hidden = self.backbone.encode(embeds, batch.attention_mask, pairs)
        features = self.backbone.pool(hidden, batch.attention_mask)
        return self.per_example_head(features, params)


def _check_layer_map(layer_map: Sequence[int] | None, layers: int) -> int:
    """The number of stored prefix rows ``layer_map`` needs.

    Raises:
        ValueError: if it does not give every layer a row, or leaves a row unused.
    """
    if layer_map is None:
        return layers
    mapped = list(layer_map)
    rows = max(mapped, default=-1) + 1
    if len(mapped) != layers or min(mapped, default=-1) < 0:
        raise ValueError(
            f"layer_map {mapped} must give each of the {layers} layers a row >= 0"
        )
    if set(mapped) != set(range(rows)):
        raise ValueError(f"layer_map {mapped} leaves rows of 0..{rows - 1} unused")
    return rows


def _vocab_prefix(
    backbone: Backbone, length: int, generator: torch.Generator
) -> torch.Tensor:
    """Keys/values ``(layers, 2, kv_heads, L, head_dim)`` of L random tokens."""
    vocab = backbone.word_embeddings.weight.shape[0]
    low = min(1000, vocab // 4)  # skip special/unused ids at the start
    ids = torch.randint(low, vocab, (1, length), generator=generator)
    ids = ids.to(backbone.device)
    with torch.no_grad():
        if backbone.kind == "decoder":
            pairs = _decoder_kv(backbone, ids)
        else:
            pairs = _encoder_kv(backbone, ids)
    return torch.stack([torch.stack([k, v]) for k, v in pairs]).float()


def _decoder_kv(backbone: Backbone, ids: torch.Tensor) -> list[Any]:
    out = backbone.body(input_ids=ids, use_cache=True)
    return [(layer.keys[0], layer.values[0]) for layer in out.past_key_values.layers]


def _encoder_kv(backbone: Backbone, ids: torch.Tensor) -> list[Any]:
    """Capture each self-attention's key/value projections with hooks."""
    attentions = [
        m for m in backbone.body.modules() if hasattr(m, "key") and hasattr(m, "value")
    ]
    if len(attentions) != backbone.num_layers:
        raise ValueError(
            f"prefix_init='vocab' cannot find the key/value projections of "
            f"{backbone.name!r}; use peft.prefix_init = 'random'"
        )
    captured: list[torch.Tensor] = []
    heads, dim = backbone.num_kv_heads, backbone.head_dim

    def grab(_: nn.Module, __: Any, output: torch.Tensor) -> None:
        captured.append(output[0].view(-1, heads, dim).transpose(0, 1))  # (H, L, hd)

    hooks = [
        proj.register_forward_hook(grab)
        for attn in attentions
        for proj in (attn.key, attn.value)
    ]
    try:
        backbone.body(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    return list(zip(captured[0::2], captured[1::2], strict=True))


def _prompt_table(model: Any) -> torch.Tensor:
    """The virtual-token table of a peft prompt-learning model."""
    table: torch.Tensor = model.prompt_encoder["default"].embedding.weight
    return table
