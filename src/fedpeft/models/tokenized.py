"""Pre-tokenized text data and length-trimmed batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedpeft.models.backbone import Backbone


@dataclass(frozen=True)
class Batch:
    """One padded batch, trimmed to its longest sequence.

    Attributes:
        input_ids: ``(batch, seq)`` int64 token ids.
        attention_mask: ``(batch, seq)`` int64, 1 on real tokens.
        labels: ``(batch,)`` int64 class ids.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """This batch on ``device`` (itself when it is there already)."""
        if self.input_ids.device == torch.device(device):
            return self
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
        )


@dataclass(frozen=True)
class TokenizedDataset:
    """A whole data set tokenized once, stored as one padded int32 matrix.

    Attributes:
        input_ids: ``(n, max_len)`` int32, right-padded with the pad id.
        lengths: ``(n,)`` number of real tokens per example.
        labels: ``(n,)`` int64 class ids.
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> TokenizedDataset:
        return TokenizedDataset(
            self.input_ids[indices], self.lengths[indices], self.labels[indices]
        )

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Batch:
        """Gather ``indices`` into a batch trimmed to its longest member, on
        ``device``."""
        width = int(self.lengths[indices].max())
        ids = torch.from_numpy(self.input_ids[indices, :width].astype(np.int64))
        mask = (
            torch.arange(width)[None, :]
            < torch.from_numpy(self.lengths[indices])[:, None]
        )
        batch = Batch(ids, mask.long(), torch.from_numpy(self.labels[indices]))
        return batch.to(device)

    def batches(
        self,
        batch_size: int,
        order: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[Batch]:
        """Consecutive batches in ``order`` (default: stored order)."""
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size], device)

    def length_sorted_batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[np.ndarray, Batch]]:
        """Batches of similar length (least padding) for evaluation.

        Yields the example indices of each batch with it, so outputs can be put
        back in the stored order.
        """
        order = np.argsort(self.lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, self.batch(idx, device)


def tokenize(
    backbone: Backbone, texts: Sequence[str], labels: np.ndarray, max_length: int
) -> TokenizedDataset:
    """Tokenize ``texts`` with the backbone's tokenizer, truncating to ``max_length``.

    Raises:
        ValueError: if ``max_length`` is not positive or exceeds the model's positions.
    """
    if not 1 <= max_length <= backbone.max_positions:
        raise ValueError(
            f"max_length={max_length} must be in [1, {backbone.max_positions}] for "
            f"backbone {backbone.name!r}"
        )
    enc = backbone.tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding="max_length",
        padding_side="right",  # lengths and batch trimming assume right padding
        return_tensors="np",
    )
    mask = enc["attention_mask"]
    lengths = mask.sum(axis=1).astype(np.int64)
    width = max(int(lengths.max(initial=1)), 1)
    return TokenizedDataset(
        enc["input_ids"][:, :width].astype(np.int32),
        lengths,
        np.asarray(labels, dtype=np.int64),
    )
