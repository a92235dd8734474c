"""Text classification corpora: the dataset types and :func:`load_corpus`.

A corpus source (registered in :data:`CORPORA`, see :mod:`fedpeft.data.corpora`)
parses raw texts and label values once per process. :func:`load_corpus` turns
them into a :class:`Corpus`: label names sorted deterministically, a seeded
stratified test split where the source has no official one, test examples whose
text also appears in the training split dropped, optional seeded stratified caps
on the split sizes and truncation of very long texts (the split, deduplication
and caps are in :mod:`fedpeft.data.splits`). The split generators derive from
``split_seed`` only, never from the run seed, so the test set stays the same
across runs.

Imports run one way: :mod:`fedpeft.data.corpora` imports this module to register
the shipped corpora, and the package ``__init__`` imports both, so every corpus
is registered before any code of this package runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.splits import (
    cap,
    drop_repeated_texts,
    drop_training_texts,
    stratified_split,
    warn_shared_texts,
)
from fedpeft.registry import Registry

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]

_SPLIT_STREAM, _TRAIN_CAP_STREAM, _TEST_CAP_STREAM = 0, 1, 2


@dataclass(frozen=True, eq=False)  # identity equality: fields hold arrays
class TextDataset:
    """Texts with integer class labels and optional per-example metadata.

    Treat the arrays as read-only; :meth:`subset` returns new ones.

    Attributes:
        texts: The examples' texts, length ``n``.
        labels: int64 class ids, shape ``(n,)``, values in ``[0, num_classes)``.
        label_names: Name of each class id (shared by train and test).
        metadata: Per-example columns, each shape ``(n,)``, e.g.
            ``{"movie_name": array of str}``; may be empty.
    """

    texts: tuple[str, ...]
    labels: IntArray
    label_names: tuple[str, ...]
    metadata: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        n = len(self.texts)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be integers of shape ({n},), got {labels.dtype} "
                f"{labels.shape}"
            )
        if n and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise ValueError(
                f"labels must lie in [0, {len(self.label_names)}), got "
                f"{labels.min()}..{labels.max()}"
            )
        for name, column in self.metadata.items():
            if len(column) != n:
                raise ValueError(
                    f"metadata column {name!r} has {len(column)} rows, not {n}"
                )
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(label_names)``), present or not."""
        return len(self.label_names)

    def class_counts(self) -> IntArray:
        """Examples per class id, shape ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: npt.NDArray[Any]) -> TextDataset:
        """The examples at ``indices`` (int array, shape ``(m,)``), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        return TextDataset(
            texts=tuple(self.texts[i] for i in idx),
            labels=self.labels[idx],
            label_names=self.label_names,
            metadata={name: column[idx] for name, column in self.metadata.items()},
        )


@dataclass(frozen=True, eq=False)
class Corpus:
    """A named train/test pair sharing one label set."""

    name: str
    train: TextDataset
    test: TextDataset

    def __post_init__(self) -> None:
        if self.train.label_names != self.test.label_names:
            raise ValueError("train and test must share label_names")

    @property
    def label_names(self) -> tuple[str, ...]:
        """The class names, indexed by class id."""
        return self.train.label_names

    def subsets(self, train: IntArray, test: IntArray) -> Corpus:
        """The same corpus holding only the rows ``train`` and ``test``."""
        return Corpus(self.name, self.train.subset(train), self.test.subset(test))


# --- sources ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RawSplit:
    """One parsed split before label encoding.

    Attributes:
        texts: The texts (none empty).
        labels: The raw label values as strings (ints are written in decimal).
        metadata: Per-example columns, each shape ``(n,)``.
        source: Where it came from, for error messages (a path).
    """

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    metadata: Mapping[str, npt.NDArray[Any]]
    source: str


@dataclass(frozen=True, eq=False)
class RawCorpus:
    """A parsed corpus; ``test`` is None where there is no official test split."""

    train: RawSplit
    test: RawSplit | None = None


@dataclass(frozen=True)
class FileFormat:
    """How to read a corpus file named by path; shipped corpora ignore it.

    Attributes:
        text_column: Column (CSV) or key (JSON lines) holding the text.
        label_column: Column or key holding the label.
        encoding: Text encoding of the file, a codec name such as ``"utf-8"``
            or ``"latin-1"``; a UTF-8 byte-order mark is skipped.
    """

    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"


CorpusLoader = Callable[[str, FileFormat], RawCorpus]
"""``(path argument or "", file format) -> RawCorpus``."""


@dataclass(frozen=True)
class CorpusSource:
    """A registered corpus.

    Attributes:
        load: The parser.
        usage: How to name it in :func:`load_corpus`, e.g. ``"csv:PATH"``.
    """

    load: CorpusLoader
    usage: str


CORPORA: Registry[CorpusSource] = Registry("corpus")


def register_corpus(
    name: str, description: str, *, takes_path: bool = False
) -> Callable[[CorpusLoader], CorpusLoader]:
    """Register a loader under ``name`` (``name:PATH`` when ``takes_path``).

    The loader receives the text after ``name:`` (empty for a shipped corpus)
    and the requested columns and encoding.
    """

    def decorator(load: CorpusLoader) -> CorpusLoader:
        def checked(argument: str, fmt: FileFormat) -> RawCorpus:
            if takes_path and not argument:
                raise ValueError(f"corpus {name!r} needs a file: write {name}:PATH")
            if not takes_path and argument:
                raise ValueError(f"corpus {name!r} takes no argument, got {argument!r}")
            return load(argument, fmt)

        usage = f"{name}:PATH" if takes_path else name
        CORPORA.add(name, CorpusSource(checked, usage), description)
        return load

    return decorator


def available_corpora() -> list[tuple[str, str]]:
    """``(usage, one-line description)`` for every registered corpus, by name."""
    return [(CORPORA.get(name).usage, CORPORA.describe(name)) for name in CORPORA]


# --- loading ------------------------------------------------------------------------


def load_corpus(
    name: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    max_chars: int | None = 2000,
    encoding: str = "utf-8",
    drop_duplicates: bool = True,
) -> Corpus:
    """Load a registered corpus, or a file as ``csv:PATH`` / ``jsonl:PATH``.

    Args:
        name: A name from :func:`available_corpora`, e.g. ``"rotten-tomatoes"``.
        text_column: Text column of a csv/jsonl file (ignored by shipped corpora).
        label_column: Label column of a csv/jsonl file (ignored by shipped ones).
        test_fraction: Test share in ``(0, 1)`` of the seeded stratified split
            made when the corpus has no official test split.
        split_seed: Seed (>= 0) of that split and of the caps below.
        max_train: Keep at most this many training examples (seeded, stratified).
        max_test: Keep at most this many test examples (seeded, stratified).
        max_chars: Truncate texts to this many characters (None: keep whole).
        encoding: Text encoding of a csv/jsonl file (ignored by shipped corpora).
        drop_duplicates: Drop repeated texts as below (False: keep every row
            and only warn how many test texts are also training texts; for
            comparisons with results made before duplicates were dropped).

    No test text is also a training text (texts compared after truncation),
    so a model is never scored on text it was trained on. Without an official
    test split, rows repeating an earlier row's text are dropped before the
    seeded split (which stays exactly stratified); with one, test examples
    repeating a training text are dropped. Either way a warning counts them,
    and it happens before the caps, so ``max_train`` does not change the test
    set.

    Returns:
        The corpus, with label names sorted (numerically if all are integers).

    Raises:
        KeyError: Unknown corpus name (the message lists the choices).
        FileNotFoundError: The corpus file is missing.
        ConfigError: The file does not decode with ``encoding`` (the message
            names the line and the setting to change).
        ValueError: A missing column (the message lists those present), a row
            with the wrong number of fields, fewer than 2 classes, an empty
            text, a test split that only repeats training texts or an
            out-of-range argument.
    """
    _check_load_args(test_fraction, split_seed, max_train, max_test, max_chars)
    _check_encoding(encoding)
    scheme, _, argument = name.partition(":")
    fmt = FileFormat(text_column, label_column, encoding)
    raw = CORPORA.get(scheme).load(argument, fmt)
    names = _label_names(raw, name, label_column)
    train = _encode(raw.train, names, max_chars)
    if raw.test is None:
        if drop_duplicates:
            train = drop_repeated_texts(train, name)
        train, test = stratified_split(train, test_fraction, split_seed)
    else:
        test = _encode(raw.test, names, max_chars)
        if drop_duplicates:
            test = drop_training_texts(test, train, name)
    if not drop_duplicates:
        warn_shared_texts(train, test, name)
    train = cap(
        train, max_train, np.random.default_rng([split_seed, _TRAIN_CAP_STREAM])
    )
    test = cap(test, max_test, np.random.default_rng([split_seed, _TEST_CAP_STREAM]))
    logger.info(
        "corpus %s: %d train, %d test, %d classes",
        name,
        len(train),
        len(test),
        len(names),
    )
    return Corpus(name=name, train=train, test=test)


def load_client_file(
    spec: str,
    label_names: tuple[str, ...],
    *,
    text_column: str = "text",
    label_column: str = "label",
    max_chars: int | None = 2000,
    encoding: str = "utf-8",
) -> TextDataset:
    """One data holder's own examples, from ``csv:PATH`` / ``jsonl:PATH`` (or a
    path ending in ``.csv`` / ``.jsonl``), labelled with the run's classes.

    Every row is kept, in file order (the holder's data is not split off a
    pool or capped: the run's ``data`` caps apply to the run's corpus).

    Raises:
        ValueError: an unsupported file type, a missing column, an empty text,
            or a label the run does not have (the message lists the run's).
        FileNotFoundError: the file is missing.
    """
    _check_encoding(encoding)
    scheme, sep, argument = spec.partition(":")
    if not sep or scheme not in ("csv", "jsonl"):
        suffix = spec.rsplit(".", 1)[-1].lower()
        if suffix not in ("csv", "jsonl"):
            raise ValueError(
                f"client data {spec!r}: name a .csv or .jsonl file, or write "
                "csv:PATH / jsonl:PATH"
            )
        scheme, argument = suffix, spec
    raw = CORPORA.get(scheme).load(
        argument, FileFormat(text_column, label_column, encoding)
    )
    split = raw.train
    if raw.test is not None:
        split = RawSplit(
            split.texts + raw.test.texts,
            split.labels + raw.test.labels,
            {},
            split.source,
        )
    unknown = sorted(set(split.labels) - set(label_names))
    if unknown:
        raise ValueError(
            f"{split.source} has label(s) {unknown[:10]} that this run does not "
            f"have; the run's labels are {list(label_names)} (column "
            f"{label_column!r}; rename the labels or fix data.label_column)"
        )
    if not split.texts:
        raise ValueError(f"{split.source} has no examples")
    return _encode(split, label_names, max_chars)


def _check_load_args(
    test_fraction: float,
    split_seed: int,
    max_train: int | None,
    max_test: int | None,
    max_chars: int | None,
) -> None:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1)")
    if not _is_count(split_seed, 0):
        raise ValueError(f"split_seed={split_seed!r} must be an integer >= 0")
    limits = {"max_train": max_train, "max_test": max_test, "max_chars": max_chars}
    for key, value in limits.items():
        if value is not None and not _is_count(value, 1):
            raise ValueError(f"{key}={value!r} must be None or an integer >= 1")


def _check_encoding(encoding: str) -> None:
    try:
        "a".encode(encoding)  # LookupError: unknown, or not a text encoding
    except LookupError:
        raise ValueError(
            f"encoding={encoding!r} is not a text encoding Python knows; "
            "use e.g. utf-8, latin-1 or cp1252"
        ) from None


def _is_count(value: object, lowest: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return bool(value >= lowest)


def _label_names(raw: RawCorpus, name: str, label_column: str) -> tuple[str, ...]:
    values = set(raw.train.labels) | set(raw.test.labels if raw.test else ())
    if all(_is_int(v) for v in values):
        names = tuple(sorted(values, key=int))
    else:
        names = tuple(sorted(values))
    if len(names) < 2:
        raise ValueError(
            f"corpus {name!r} has {len(names)} class(es) {list(names)}; "
            f"classification needs at least 2 (label column {label_column!r})"
        )
    return names


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _encode(
    raw: RawSplit, names: tuple[str, ...], max_chars: int | None
) -> TextDataset:
    empty = [i for i, text in enumerate(raw.texts) if not text.strip()]
    if empty:
        raise ValueError(
            f"{len(empty)} empty text(s) in {raw.source} at rows {empty[:5]} "
            "(0-based, header excluded); remove or fill them"
        )
    ids = {label: i for i, label in enumerate(names)}
    texts = raw.texts if max_chars is None else tuple(t[:max_chars] for t in raw.texts)
    return TextDataset(
        texts=texts,
        labels=np.array([ids[label] for label in raw.labels], dtype=np.int64),
        label_names=names,
        metadata={key: np.array(column) for key, column in raw.metadata.items()},
    )
