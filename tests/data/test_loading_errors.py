"""Corpus files that are malformed, not UTF-8, huge or leaky: clear errors, safe loads.

Also checks that the corpus modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

import fedpeft.data
from fedpeft.config import ConfigError
from fedpeft.data import CORPORA, load_corpus
from fedpeft.data.corpus import FileFormat


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _rows(n: int) -> list[str]:
    return [f"text {i},{i % 2}" for i in range(n)]


# --- ragged rows ----------------------------------------------------------------------


def test_ragged_row_is_reported_at_its_own_line(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[2] = "a, b, c,1"  # file line 4 (the header is line 1)
    path = _write(tmp_path / "r.csv", ["text,label", *rows])

    with pytest.raises(ValueError, match=r"r\.csv line 4: found 4 fields, expected 2"):
        load_corpus(f"csv:{path}")


def test_short_row_is_reported_at_its_own_line(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[6] = "no label here"  # file line 8
    path = _write(tmp_path / "s.csv", ["text,label", *rows])

    with pytest.raises(ValueError, match=r"line 8: found 1 field, expected 2"):
        load_corpus(f"csv:{path}")


def test_ragged_row_after_multiline_cells_and_blank_lines(tmp_path: Path) -> None:
    lines = [
        "text,label",
        '"spans\nthree\nlines",0',  # file lines 2-4
        "",  # line 5, skipped
        "plain,1",  # line 6
        "x,1,extra",  # line 7
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"line 7: found 3 fields, expected 2"):
        load_corpus(f"csv:{path}")


# --- encodings ------------------------------------------------------------------------


def test_non_utf8_csv_names_file_line_encoding_and_option(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[3] = "caf\u00e9 au lait,1"  # file line 5
    path = _write(tmp_path / "l.csv", ["text,label", *rows], encoding="latin-1")

    with pytest.raises(ConfigError) as info:
        load_corpus(f"csv:{path}")

    message = str(info.value)
    assert str(path) in message and "line 5" in message
    assert "0xe9" in message and "utf-8" in message
    assert "--set data.encoding=latin-1" in message


def test_encoding_option_reads_a_latin1_csv(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[3] = "caf\u00e9 au lait,1"
    path = _write(tmp_path / "l.csv", ["text,label", *rows], encoding="latin-1")

    corpus = load_corpus(f"csv:{path}", encoding="latin-1")

    assert "caf\u00e9 au lait" in corpus.train.texts + corpus.test.texts


def test_non_utf8_jsonl_names_line_and_reads_with_the_option(tmp_path: Path) -> None:
    rows = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(10)]
    rows[7] = '{"text": "na\u00efve", "label": 1}'  # line 8, raw latin-1 byte
    path = _write(tmp_path / "d.jsonl", rows, encoding="latin-1")

    with pytest.raises(ConfigError, match=r"line 8.*data\.encoding=latin-1"):
        load_corpus(f"jsonl:{path}")
    corpus = load_corpus(f"jsonl:{path}", encoding="latin-1")

    assert "na\u00efve" in corpus.train.texts + corpus.test.texts


def test_utf8_byte_order_mark_is_still_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(["text,label", *_rows(6)]).encode())

    corpus = load_corpus(f"csv:{path}")

    assert len(corpus.train) + len(corpus.test) == 6


def test_unknown_encoding_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.csv", ["text,label", *_rows(6)])

    with pytest.raises(ValueError, match="encoding='utf-99'"):
        load_corpus(f"csv:{path}", encoding="utf-99")


# --- large cells ----------------------------------------------------------------------


def test_a_300_kib_cell_loads_whole(tmp_path: Path) -> None:
    big = "w" * (300 * 1024)
    path = _write(tmp_path / "big.csv", ["text,label", f"{big},0", *_rows(9)])

    corpus = load_corpus(f"csv:{path}", max_chars=None)

    texts = corpus.train.texts + corpus.test.texts
    assert max(len(t) for t in texts) == 300 * 1024


# --- duplicates across the split ------------------------------------------------------


def _leaky_rows() -> list[str]:
    """60 rows, labels alternating; texts d0..d9 each appear three times."""
    return [f"{f'd{i % 10}' if i < 30 else f'u{i}'},{i % 2}" for i in range(60)]


def test_repeated_rows_are_dropped_before_the_split_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _leaky_rows()
    firsts = [
        r
        for i, r in enumerate(rows)
        if r.split(",")[0] not in {s.split(",")[0] for s in rows[:i]}
    ]
    leaky = _write(tmp_path / "leaky.csv", ["text,label", *rows])
    unique = _write(tmp_path / "unique.csv", ["text,label", *firsts])
    expected = load_corpus(f"csv:{unique}", test_fraction=0.3)

    with caplog.at_level(logging.WARNING, logger="fedpeft.data.splits"):
        corpus = load_corpus(f"csv:{leaky}", test_fraction=0.3)

    assert corpus.train.texts == expected.train.texts
    assert corpus.test.texts == expected.test.texts
    assert corpus.test.labels.tolist() == expected.test.labels.tolist()
    assert not set(corpus.test.texts) & set(corpus.train.texts)
    assert f"dropped {len(rows) - len(firsts)} row(s)" in caplog.text


def test_official_test_rows_repeating_a_training_text_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = CORPORA.get("reuters-r8").load("", FileFormat())  # the parsed files
    assert raw.test is not None
    train_texts = {t[:2000] for t in raw.train.texts}
    leaked = sum(t[:2000] in train_texts for t in raw.test.texts)
    assert leaked  # the official split really repeats some training texts

    with caplog.at_level(logging.WARNING, logger="fedpeft.data.splits"):
        corpus = load_corpus("reuters-r8", max_chars=2000)

    assert len(corpus.train) == len(raw.train.texts)
    assert len(corpus.test) == len(raw.test.texts) - leaked
    assert not set(corpus.test.texts) & set(corpus.train.texts)
    assert f"dropped {leaked} test example(s)" in caplog.text


def test_dropping_duplicates_is_deterministic_and_ignores_max_train(
    tmp_path: Path,
) -> None:
    leaky = _write(tmp_path / "leaky.csv", ["text,label", *_leaky_rows()])

    first = load_corpus(f"csv:{leaky}", test_fraction=0.3)
    again = load_corpus(f"csv:{leaky}", test_fraction=0.3)
    capped = load_corpus(f"csv:{leaky}", test_fraction=0.3, max_train=10)

    assert first.test.texts == again.test.texts == capped.test.texts


def test_no_warning_without_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "u.csv", ["text,label", *_rows(30)])

    with caplog.at_level(logging.WARNING, logger="fedpeft.data.splits"):
        corpus = load_corpus(f"csv:{path}", test_fraction=0.3)

    assert len(corpus.test) == 9
    assert "dropped" not in caplog.text


# --- import graph ---------------------------------------------------------------------

_PACKAGE = "fedpeft.data"
_MODULES = ("corpus", "corpora", "report")


def _imports(module: str) -> set[str]:
    """Modules of fedpeft.data that ``module`` imports anywhere (functions too)."""
    root = Path(fedpeft.data.__file__).parent
    file = root / "__init__.py" if module == _PACKAGE else root / f"{module}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else f"{_PACKAGE}.{node.module}"
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            if name.startswith(f"{_PACKAGE}."):
                head = name.split(".")[2]
                found.add(head if head in _MODULES else "partition")
            elif name == _PACKAGE:
                found.add(_PACKAGE)
    return found - {module}


def test_corpus_modules_import_without_a_cycle() -> None:
    graph = {m: _imports(m) for m in (_PACKAGE, *_MODULES)}

    def reaches(start: str, target: str, seen: frozenset[str]) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in graph.get(start, set())
        )

    assert "corpora" not in graph["corpus"]
    assert not [m for m in graph if reaches(m, m, frozenset({m}))], graph
