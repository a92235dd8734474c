"""`fedpeft partition` reports bad configs and data as `fedpeft run` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fedpeft.cli import app

WIDE = {"COLUMNS": "200"}  # rich reads the width from here; no wrapped messages


def partition(*overrides: str) -> Result:
    args = ["partition"]
    for item in overrides:
        args += ["--set", item]
    return CliRunner().invoke(app, args, env=WIDE)


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["text,label", *rows]) + "\n", encoding="utf-8")
    return path


def _assert_clean(result: Result, code: int) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    assert "Traceback" not in result.output


def test_unknown_partition_method_exits_2_with_the_choices() -> None:
    result = partition("partition.method=bogus")

    _assert_clean(result, 2)
    assert "unknown partitioner 'bogus'" in result.stderr
    assert "dirichlet" in result.stderr


def test_ragged_csv_fails_cleanly_naming_the_line(tmp_path: Path) -> None:
    rows = [f"doc {i},{i % 2}" for i in range(20)]
    rows[4] = "doc, with a comma,1"  # file line 6
    path = _csv(tmp_path / "r.csv", rows)

    result = partition(f"data.corpus=csv:{path}")

    _assert_clean(result, 1)
    assert "partition failed" in result.stderr
    assert "line 6: found 3 fields, expected 2" in result.stderr
    assert "--verbose" in result.stderr


def test_missing_column_fails_cleanly(tmp_path: Path) -> None:
    path = _csv(tmp_path / "c.csv", [f"doc {i},{i % 2}" for i in range(20)])

    result = partition(f"data.corpus=csv:{path}", "data.text_column=body")

    _assert_clean(result, 1)
    assert "no column 'body'; available columns: text, label" in result.stderr


def test_non_utf8_data_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(b"text,label\ncaf\xe9,0\ntea,1\n")

    result = partition(f"data.corpus=csv:{path}")

    _assert_clean(result, 2)
    assert "--set data.encoding=latin-1" in result.stderr


@pytest.mark.slow
def test_impossible_min_size_exits_2_with_the_limits(tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv", [f"doc {i},{i % 2}" for i in range(40)])

    result = partition(
        f"data.corpus=csv:{path}", "partition.min_size=1000", "data.max_train=10"
    )

    _assert_clean(result, 2)
    assert "min_size=1000" in result.stderr
