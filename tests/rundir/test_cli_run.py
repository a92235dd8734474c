"""`fedpeft run` against an existing run directory: refuse, lock, overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import tomli_w
from typer.testing import CliRunner

from fedpeft.cli import app
from fedpeft.config import load_config
from fedpeft.rundir.lock import FileLock

WIDE = {"COLUMNS": "300"}


def _files(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def _earlier_run(run_dir: Path, overrides: list[str]) -> dict[str, bytes]:
    """A run directory written by hand as an earlier run would leave it."""
    (run_dir / "checkpoint" / "round-00001").mkdir(parents=True)
    config = tomli_w.dumps(load_config(None, overrides).to_dict())
    (run_dir / "config.toml").write_text(config)
    (run_dir / "metrics.jsonl").write_text('{"run": "federated", "round": 0}\n')
    (run_dir / "checkpoint" / "round-00001" / "state.json").write_text("{}")
    return _files(run_dir)


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["run", "--quiet", *args], env=WIDE)


def test_a_second_run_with_the_same_name_is_refused(tmp_path: Path) -> None:
    items = [f"output_dir={tmp_path}", "name=old"]
    before = _earlier_run(tmp_path / "old", items)
    fail_fast = f"data.corpus=csv:{tmp_path / 'missing.csv'}"  # if not refused

    result = _run("--set", items[0], "--set", items[1], "--set", fail_fast)

    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    for text in (str(tmp_path / "old"), "metrics.jsonl", "--resume", "--overwrite"):
        assert text in err, text
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert _files(tmp_path / "old") == before  # byte-identical, nothing added


def test_resume_while_another_process_writes_names_its_pid(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"  # fails fast if the lock were not checked
    items = [f"output_dir={tmp_path}", "name=busy", f"data.corpus=csv:{missing}"]
    before = _earlier_run(tmp_path / "busy", items)
    other = FileLock(tmp_path / "busy" / ".lock")
    other.acquire()
    try:
        result = _run(*[w for item in items for w in ("--set", item)], "--resume")
    finally:
        other.release()

    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert f"PID {os.getpid()}" in result.stderr  # type: ignore[attr-defined]
    after = _files(tmp_path / "busy")
    assert after.pop(".lock") == b""
    assert after == before


def test_overwrite_replaces_the_earlier_run_and_releases_the_lock(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.csv"  # the run fails right after opening its dir
    items = [f"output_dir={tmp_path}", "name=again", f"data.corpus=csv:{missing}"]
    _earlier_run(tmp_path / "again", [*items[:2]])

    result = _run(*[w for item in items for w in ("--set", item)], "--overwrite")

    assert result.exit_code != 0
    assert "missing.csv" in result.output  # type: ignore[attr-defined]
    run_dir = tmp_path / "again"
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.toml"]
    assert f"csv:{missing}" in (run_dir / "config.toml").read_text()
    with FileLock(run_dir / ".lock") as lock:  # released although the run failed
        assert lock.held
