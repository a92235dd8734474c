"""Pooled features of a data set under an adapter's body, computed once.

The warm starts fit a head on the features the frozen backbone gives under
the adapter's initial body: the federated round 0 (each client on its shard),
the centralized baseline (on the pool, the union of those shards) and the
local-only baseline (each client again). Without a cache a run computes the
same forward passes up to three times; on the main job the repeat in the
centralized baseline was 46.8 s of 865 s on an AVX2 CPU (docs/benchmarks.md).

A cache hit returns exactly what the computation would: an entry is keyed by
the adapter (class, options, body parameters' bytes), the data set's bytes,
the batch size and the resolved precision, so the same length-sorted batches
would run. Pooled data sets are read as their shards
(:func:`pooled_features`): the pool's features are its clients' to the bit,
whether the federated run went first or not (a resumed run included).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from fedpeft.models.embed import map_pooled
from fedpeft.models.precision import resolve_precision
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier

DEFAULT_MAX_BYTES = 512 * 2**20
"""The cache's bound (least recently used entries go first): the main job's
whole training pool, 2,000 examples × 384 float32 dims, is 3 MB."""

Shards = TokenizedDataset | Sequence[TokenizedDataset]
"""One data set, or the shards it is the union of (a pool read as its
clients' shards gives their features to the bit: :func:`pooled_features`)."""


class FeatureCache:
    """Pooled features by (adapter body, data set, batch size, precision),
    bounded in bytes, safe to share between threads."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def features(
        self,
        model: AdapterClassifier,
        data: TokenizedDataset,
        batch_size: int = 128,
        precision: str = "auto",
    ) -> torch.Tensor:
        """``model``'s pooled features ``(n, dim)`` of ``data`` (float32, CPU,
        a fresh tensor), from the cache when the same computation ran before.
        A model built outside :func:`fedpeft.peft.base.build_adapter` (no
        ``method_config`` to key on) is never cached."""
        key = _key(model, data, batch_size, precision)
        if key is None:
            return compute_features(model, data, batch_size, precision)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached.clone()
        out = compute_features(model, data, batch_size, precision)
        with self._lock:
            self.misses += 1
            if out.numel() * out.element_size() <= self.max_bytes:
                self._entries[key] = out.clone()
                while self.nbytes > self.max_bytes:
                    self._entries.popitem(last=False)
        return out


def compute_features(
    model: AdapterClassifier,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "auto",
) -> torch.Tensor:
    """``model``'s pooled features ``(n, dim)`` (float32, on the CPU) of every
    example of ``data``, in its order."""
    dim = model.backbone.hidden_size
    return map_pooled(model.features, data, dim, batch_size, precision, model.device)


def pooled_features(
    model: AdapterClassifier,
    data: Shards,
    batch_size: int = 128,
    precision: str = "auto",
    cache: FeatureCache | None = None,
) -> torch.Tensor:
    """Features ``(n, dim)`` (float32, on the CPU) of ``model`` for every
    example of ``data`` in order, each shard computed on its own (as its
    client computes it), through ``cache`` when given."""
    shards = [data] if isinstance(data, TokenizedDataset) else data
    parts = [
        cache.features(model, s, batch_size, precision)
        if cache is not None
        else compute_features(model, s, batch_size, precision)
        for s in shards
        if len(s)
    ]
    if not parts:
        return torch.empty(0, model.backbone.hidden_size)
    return torch.cat(parts)


def _key(
    model: AdapterClassifier, data: TokenizedDataset, batch_size: int, precision: str
) -> bytes | None:
    """The digest of everything the features depend on, or ``None`` where
    the adapter's options are unknown."""
    options = getattr(model, "method_config", None)
    if options is None:
        return None
    h = hashlib.blake2b(digest_size=20)
    for part in (
        type(model).__qualname__,
        options.model_dump_json(),
        model.backbone.name,
        str(id(model.backbone)),  # the cache lives no longer than its experiment
        str(model.device),
        resolve_precision(precision, model.device),
        str(batch_size),
    ):
        h.update(part.encode())
        h.update(b"\0")
    for name, param in sorted(model.trainable_parameters().items()):
        if name.startswith(model.head_prefix):
            continue  # the head never enters the features
        h.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        h.update(param.detach().cpu().reshape(-1).view(torch.uint8).numpy().data)
    h.update(type(data).__qualname__.encode())
    for array in (data.input_ids, data.lengths):
        h.update(f"{array.shape}{array.dtype}".encode())
        h.update(array.tobytes())
    return h.digest()
