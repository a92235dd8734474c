"""Tables of text and labels: CSV and JSON-lines readers and the split they make.

The corpus loaders of :mod:`fedpeft.data.corpora` read their files with these
functions: rows as dicts (:func:`_read_csv`, :func:`_read_jsonl`), a text and a
label column checked per row, the other columns kept as typed metadata
(:func:`_table_split`), and an undecodable file reported with its line and the
``data.encoding`` to set (:func:`_undecodable`).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.corpus import RawSplit
from fedpeft.registry import ConfigError

Row = Mapping[str, Any]

# csv's default cap on one cell (128 KiB) rejects long documents. The cap is
# process-wide; this is the largest value a C long holds on every platform.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


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
    """Read the header row and the data rows (one dict each); skip blank lines.

    Raises:
        ValueError: No header, malformed CSV, or a row whose number of fields
            differs from the header's (the message names the row's first line).
    """
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(handle)
    rows: list[dict[str, Any]] = []
    try:
        columns = next(reader, [])
        if not columns:
            raise ValueError(
                f"{source} is empty; expected a header row of column names"
            )
        last = reader.line_num
        for fields in reader:
            first, last = last + 1, reader.line_num  # a quoted cell may span lines
            if not fields:
                continue
            if len(fields) != len(columns):
                raise ValueError(_ragged_row(source, first, last, fields, columns))
            rows.append(dict(zip(columns, fields, strict=True)))
    except csv.Error as err:
        raise ValueError(f"{source} line {reader.line_num}: {err}") from None
    return columns, rows


def _ragged_row(
    source: str, first: int, last: int, fields: list[str], columns: list[str]
) -> str:
    lines = f"line {first}" if first == last else f"lines {first}-{last}"
    plural = "" if len(fields) == 1 else "s"
    return (
        f"{source} {lines}: found {len(fields)} field{plural}, expected "
        f"{len(columns)} ({', '.join(columns)}); quote cells that hold a comma"
    )


def _undecodable(path: str, encoding: str) -> ConfigError:
    """The error for a file that ``encoding`` cannot decode: where, and what to set."""
    data = Path(path).read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].decode(encoding).count("\n") + 1
        where = f" line {line}: byte 0x{data[err.start]:02x} at offset {err.start}"
    else:  # only the stream's decoder failed; no position to report
        where = ""
    return ConfigError(
        f"{path}{where} is not valid {encoding}. Name the file's encoding: "
        "--set data.encoding=latin-1 (or cp1252, ...; encoding= in load_corpus), "
        f"or save the file as {encoding}"
    )


def _text_encoding(encoding: str) -> str:
    """``encoding``, or ``utf-8-sig`` for UTF-8: a byte-order mark is skipped."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _read_jsonl(path: Path, encoding: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding=_text_encoding(encoding)) as handle:
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
