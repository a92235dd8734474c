"""How a corpus is split: stratified samples, the test split, duplicates, caps.

:func:`fedpeft.data.corpus.load_corpus` runs these in order: drop repeated texts
(:func:`drop_repeated_texts` before a seeded split, :func:`drop_training_texts`
with an official test split), split (:func:`stratified_split`), then cap each
split (:func:`cap`). Every draw comes from a generator the caller seeds from
``split_seed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fedpeft.data.partition import IntArray, allocate_proportional

if TYPE_CHECKING:
    from fedpeft.data.corpus import TextDataset

logger = logging.getLogger(__name__)


def stratified_sample(
    labels: IntArray, size: int, rng: np.random.Generator
) -> IntArray:
    """Choose ``size`` indices without replacement, keeping class proportions.

    Each class gets its largest-remainder share of ``size`` (within 1 of
    ``size * count / n``), drawn uniformly from that class with ``rng``.

    Returns:
        Sorted int64 indices, shape ``(size,)``.
    """
    counts = np.bincount(labels)
    if not 0 <= size <= len(labels):
        raise ValueError(f"size={size} must be in [0, {len(labels)}]")
    quotas = allocate_proportional(size, counts)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in enumerate(quotas)
        if q > 0
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def stratified_split(
    data: TextDataset, test_fraction: float, split_seed: int
) -> tuple[TextDataset, TextDataset]:
    """``(train, test)``: a seeded stratified ``test_fraction`` of ``data`` is test.

    The test share is rounded and kept in ``[1, n - 1]`` examples.
    """
    n = len(data)
    if n < 2:
        raise ValueError(f"need at least 2 examples to split off a test set, got {n}")
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    test_idx = stratified_sample(data.labels, n_test, np.random.default_rng(split_seed))
    train_mask = np.ones(n, dtype=bool)
    train_mask[test_idx] = False
    return data.subset(np.flatnonzero(train_mask)), data.subset(test_idx)


def drop_repeated_texts(data: TextDataset, name: str) -> TextDataset:
    """``data`` keeping only the first row of each text, in order."""
    first: dict[str, int] = {}
    keep = [first.setdefault(text, i) == i for i, text in enumerate(data.texts)]
    kept = np.flatnonzero(keep)
    if len(kept) == len(data):
        return data
    logger.warning(
        "corpus %s: dropped %d row(s) repeating an earlier row's text before the "
        "train/test split, so that no test text is also a training text "
        "(%d rows left)",
        name,
        len(data) - len(kept),
        len(kept),
    )
    return data.subset(kept)


def drop_training_texts(
    test: TextDataset, train: TextDataset, name: str
) -> TextDataset:
    """``test`` without the examples whose text is also a training text."""
    seen = set(train.texts)
    kept = np.flatnonzero([text not in seen for text in test.texts])
    if len(kept) == len(test):
        return test
    if len(kept) == 0:
        raise ValueError(
            f"corpus {name!r}: all {len(test)} test texts also appear in the "
            "training split; the test split would be empty"
        )
    logger.warning(
        "corpus %s: dropped %d test example(s) whose text also appears in the "
        "training split (%d test examples left)",
        name,
        len(test) - len(kept),
        len(kept),
    )
    return test.subset(kept)


def warn_shared_texts(train: TextDataset, test: TextDataset, name: str) -> None:
    """Warn how many test examples repeat a training text (kept as asked)."""
    seen = set(train.texts)
    shared = sum(text in seen for text in test.texts)
    if shared:
        logger.warning(
            "corpus %s: %d test example(s) repeat a training text and are kept "
            "(data.drop_duplicates = false); set data.drop_duplicates = true to "
            "drop them",
            name,
            shared,
        )


def cap(data: TextDataset, limit: int | None, rng: np.random.Generator) -> TextDataset:
    """At most ``limit`` examples of ``data``, a stratified sample (None: all)."""
    if limit is None or limit >= len(data):
        return data
    return data.subset(stratified_sample(data.labels, limit, rng))
