"""Running a frozen backbone.

A :class:`Backbone` bundles a Hugging Face model (frozen, eval mode) with its
tokenizer. It is loaded once per process
(:func:`fedpeft.models.loading.load_backbone` caches it) and shared by every
simulated client: clients own adapters, never backbone copies.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedpeft.models.packed import pack_linear_layers
from fedpeft.models.pooling import last_token_pool, mean_pool

logger = logging.getLogger(__name__)

PastKeyValues = Any
"""Prefix keys/values for :meth:`Backbone.encode`: a transformers ``Cache``, or
per layer a ``(key, value)`` pair of ``(batch or 1, kv_heads, L, head_dim)`` or
``(kv_heads, L, head_dim)`` tensors (a ``(layers, 2, ...)`` tensor also works)."""


@dataclass(frozen=True, eq=False)
class Backbone:
    """A frozen transformer and its tokenizer.

    Sequences are right-padded; the tokenizer always has a pad token (for a
    tokenizer without one, :func:`load_backbone` sets it to the EOS token, else
    the UNK token, on the backbone's own tokenizer instance). Padding is masked
    out, so the pad id never matters.

    Attributes:
        name: Registry name or local path it was loaded from.
        model: The Hugging Face model; every parameter has ``requires_grad=False``.
            For a decoder, the ``*ForCausalLM`` model (transformer plus LM head).
        tokenizer: The matching fast tokenizer.
        kind: ``"encoder"`` (bidirectional, pooled) or ``"decoder"`` (causal).
    """

    name: str
    model: Any  # a transformers PreTrainedModel (untyped library)
    tokenizer: Any  # its PreTrainedTokenizerFast
    kind: str

    @property
    def device(self) -> torch.device:
        """Where the model's weights are, and so where every adapter computes."""
        return next(self.model.parameters()).device  # type: ignore[no-any-return]

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 512))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        """Query heads per attention layer."""
        return int(self.model.config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads per layer (fewer than query heads with grouped queries)."""
        kv = getattr(self.model.config, "num_key_value_heads", None)
        return int(kv) if kv else self.num_heads

    @property
    def head_dim(self) -> int:
        dim = getattr(self.model.config, "head_dim", None)
        return int(dim) if dim else self.hidden_size // self.num_heads

    @property
    def body(self) -> Any:
        """The bare transformer returning hidden states (no LM head): ``model.model``
        of a ``*ForCausalLM``, the model itself for an encoder."""
        return self.model.base_model

    @property
    def word_embeddings(self) -> nn.Embedding:
        emb = self.model.get_input_embeddings()
        if not isinstance(emb, nn.Embedding):
            raise TypeError(
                f"{self.name}: input embeddings are {type(emb).__name__}, "
                "expected torch.nn.Embedding"
            )
        return emb

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (before position embeddings), ``(batch, seq, dim)``."""
        return torch.as_tensor(self.word_embeddings(input_ids))

    def encode(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: PastKeyValues | None = None,
    ) -> torch.Tensor:
        """Last hidden states (after the final norm) for input embeddings.

        With ``past_key_values`` (prefix tuning, Li & Liang 2021), every layer
        attends to ``L`` extra key/value positions before the inputs; decoders
        then number the inputs' positions from ``L`` (transformers adds the
        cache length to the position ids). The prefix is copied into a fresh
        cache on each call, so the caller's tensors or cache are never extended.
        A prefix of length 0 is the same as none.

        Args:
            inputs_embeds: ``(batch, seq, dim)`` input embeddings.
            attention_mask: ``(batch, seq)`` (prefix positions are then always
                attended) or ``(batch, L + seq)``; 1 on real tokens.
            past_key_values: Optional prefix, see :data:`PastKeyValues`.

        Returns:
            ``(batch, seq, dim)`` hidden states of the inputs only.

        Raises:
            ValueError: if the prefix or mask shapes do not fit the model/inputs.
        """
        batch, seq, _ = inputs_embeds.shape
        body, dtype = self.compute_body()
        cache = None
        if past_key_values is not None:
            cache = self._prefix_cache(past_key_values, batch, dtype)
        prefix = cache.get_seq_length() if cache is not None else 0
        mask = _prefixed_mask(attention_mask, batch, seq, prefix)
        kwargs: dict[str, Any] = {}
        if prefix:
            kwargs[self._cache_argument] = cache
        if self.kind == "decoder":
            kwargs["use_cache"] = False  # do not build a cache nobody reads
        out = body(inputs_embeds=inputs_embeds.to(dtype), attention_mask=mask, **kwargs)
        return torch.as_tensor(out.last_hidden_state).float()  # (batch, seq, dim)

    def compute_body(self) -> tuple[Any, torch.dtype]:
        """The body :meth:`encode` runs and the dtype its inputs take: under
        bf16 autocast on the backbone's device :attr:`bf16_body` in bf16, else
        :attr:`body` in fp32."""
        kind = self.device.type
        if (
            torch.is_autocast_enabled(kind)
            and torch.get_autocast_dtype(kind) == torch.bfloat16
        ):
            return self.bf16_body, torch.bfloat16
        return self.body, torch.float32

    @functools.cached_property
    def bf16_body(self) -> Any:
        """A frozen copy of :attr:`body` with every weight in bf16, made on
        first use and kept (half the body's fp32 size).

        Autocast alone runs the matmuls in bf16 but casts each weight on every
        call and keeps norms, residual sums and activations in fp32, casting
        back and forth between them; with the copy everything outside the
        attention kernel (:mod:`fedpeft.models.attention`) is bf16. It was
        faster than autocast alone in every A/B so far, by an amount not yet
        measured on a quiet machine; results differ from autocast's by bf16
        rounding (``bench/bf16_copy.py``; docs/benchmarks.md, "The main job by
        phase"). On the CPU its linear layers keep their weights packed for
        oneDNN (:mod:`fedpeft.models.packed`). The fp32 body stays the reference that
        adapters wrapping the body (LoRA, IA3, BitFit, full) copy.
        """
        with torch.inference_mode(False):  # first use may be under inference mode
            body = copy.deepcopy(self.body).to(torch.bfloat16).requires_grad_(False)
        if self.device.type == "cpu":
            pack_linear_layers(body)  # weights reordered once, not on every call
        return body

    @functools.cached_property
    def _cache_argument(self) -> str:
        """The name the body's ``forward`` takes a key/value cache under:
        ``cache`` from transformers 5.24 (which deprecates ``past_key_values``,
        to be removed in 5.40), ``past_key_values`` before."""
        params = inspect.signature(self.body.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _prefix_cache(self, past: PastKeyValues, batch: int, dtype: torch.dtype) -> Any:
        """A fresh ``DynamicCache`` holding the prefix in ``dtype``, expanded to
        ``batch``."""
        from transformers import Cache, DynamicCache

        if isinstance(past, Cache):
            layers: Any = past.layers
            past = [(layer.keys, layer.values) for layer in layers]
        if len(past) != self.num_layers:
            raise ValueError(
                f"prefix has {len(past)} layers; backbone {self.name!r} has "
                f"{self.num_layers}"
            )
        pairs = [
            tuple(self._check_prefix(t, batch).to(dtype) for t in kv) for kv in past
        ]
        lengths = {key.shape[2] for key, _ in pairs}
        if len(lengths) != 1:
            raise ValueError(f"prefix lengths differ across layers: {sorted(lengths)}")
        return DynamicCache(ddp_cache_data=pairs)

    def _check_prefix(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """One prefix key or value as ``(batch, kv_heads, L, head_dim)``."""
        t = t.unsqueeze(0) if t.dim() == 3 else t
        heads, dim = self.num_kv_heads, self.head_dim
        if (
            t.dim() != 4
            or t.shape[0] not in (1, batch)
            or ((t.shape[1], t.shape[3]) != (heads, dim))
        ):
            raise ValueError(
                f"prefix key/value of shape {tuple(t.shape)} must be "
                f"(batch={batch} or 1, kv_heads={heads}, L, head_dim={dim}) or "
                f"(kv_heads={heads}, L, head_dim={dim})"
            )
        return t.expand(batch, -1, -1, -1)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence, ``(batch, dim)``, from ``(batch, seq, dim)``.

        Encoders: the mean over real tokens. Decoders: the state of the last
        real token (the only one that has seen the whole sequence); with right
        padding that is position ``mask.sum(1) - 1``.
        """
        if self.kind == "decoder":
            return last_token_pool(hidden, attention_mask)
        return mean_pool(hidden, attention_mask)

    def lm_head_rows(self, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Output-embedding rows ``(k, dim)`` of ``token_ids`` (a decoder's LM head;
        with tied embeddings, the input embedding rows). A detached copy.

        Raises:
            ValueError: for an encoder (no LM head) or an id outside the vocabulary.
        """
        head = self.model.get_output_embeddings() if self.kind == "decoder" else None
        if head is None:
            raise ValueError(
                f"backbone {self.name!r} ({self.kind}) has no LM head; "
                "lm_head_rows needs a decoder"
            )
        ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)  # (k,)
        vocab = int(head.weight.shape[0])
        if ids.numel() and not (int(ids.min()) >= 0 and int(ids.max()) < vocab):
            raise ValueError(f"token ids {ids.tolist()} must be in [0, {vocab})")
        weight: torch.Tensor = head.weight.detach()  # (vocab, dim)
        return weight[ids].clone()  # (k, dim)

    def verbalizer_ids(self, label_names: Sequence[str]) -> list[int]:
        """First token id of ``" " + name`` per label (the word as it would
        follow text), for scoring classes with the LM head.

        Raises:
            ValueError: if a name tokenizes to nothing, or two labels share
                their first token.
        """
        ids: list[int] = []
        owner: dict[int, str] = {}
        for name in label_names:
            pieces = self.tokenizer.encode(" " + name, add_special_tokens=False)
            if not pieces:
                raise ValueError(f"label name {name!r} tokenizes to no tokens")
            first = int(pieces[0])
            if first in owner:
                token = self.tokenizer.convert_ids_to_tokens(first)
                raise ValueError(
                    f"labels {owner[first]!r} and {name!r} share their first token "
                    f"{token!r} (id {first}); use label names that start with "
                    "different words"
                )
            owner[first] = name
            ids.append(first)
        return ids


def _prefixed_mask(
    mask: torch.Tensor, batch: int, seq: int, prefix: int
) -> torch.Tensor:
    """``(batch, prefix + seq)`` mask: ones prepended for prefix positions."""
    if mask.shape == (batch, prefix + seq):
        return mask
    if prefix and mask.shape == (batch, seq):
        ones = torch.ones(batch, prefix, dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)
    allowed = f"(batch={batch}, seq={seq})"
    if prefix:
        allowed += f" or (batch={batch}, prefix + seq={prefix + seq})"
    raise ValueError(f"attention_mask of shape {tuple(mask.shape)} must be {allowed}")
