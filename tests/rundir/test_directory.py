"""Opening a run directory: refuse, resume, overwrite, lock, write config.toml."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import tomli_w

from fedpeft.config import ConfigError, load_config
from fedpeft.rundir.directory import RunDirectory, RunDirError, open_run_dir
from fedpeft.rundir.lock import FileLock

CONFIG = {"name": "exp", "seed": 0, "federation": {"rounds": 3}}


def _finished_run(path: Path, config: dict[str, object] = CONFIG) -> dict[str, bytes]:
    """A run directory as a finished run leaves it; returns its files' bytes."""
    (path / "checkpoint").mkdir(parents=True)
    files = {
        "config.toml": tomli_w.dumps(config).encode(),
        "metrics.jsonl": b'{"run": "federated", "round": 0}\n',
        "summary.json": b'{"name": "exp"}',
        "checkpoint/LATEST": b"round-00003 " + b"0" * 64 + b"\n",
    }
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def _snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_a_new_directory_gets_the_config_and_a_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "exp"

    with RunDirectory(run_dir, CONFIG) as opened:
        assert opened == run_dir
        assert tomllib.loads((run_dir / "config.toml").read_text()) == CONFIG
        assert str(os.getpid()) in (run_dir / ".lock").read_text()
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.toml"]

    assert (run_dir / ".lock").read_text() == ""  # released


def test_an_existing_run_is_refused_and_left_untouched(tmp_path: Path) -> None:
    run_dir = tmp_path / "exp"
    before = _finished_run(run_dir)

    with pytest.raises(RunDirError) as caught:
        RunDirectory(run_dir, {**CONFIG, "seed": 1}).open()

    message = str(caught.value)
    for text in (str(run_dir), "config.toml", "metrics.jsonl", "checkpoint/"):
        assert text in message, text
    for text in ("--resume", "--overwrite", "--set name="):
        assert text in message, text
    assert isinstance(caught.value, ConfigError)  # the CLI shows it, exit 2
    assert _snapshot(run_dir) == before  # config.toml not rewritten, no .lock


def test_overwrite_clears_the_directory_and_writes_the_new_config(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "exp"
    _finished_run(run_dir)
    (run_dir / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("not the run's")
    new = {**CONFIG, "seed": 7}

    with RunDirectory(run_dir, new, overwrite=True):
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.toml"]
        assert tomllib.loads((run_dir / "config.toml").read_text()) == new

    assert (tmp_path / "outside" / "keep.txt").read_text() == "not the run's"


def test_overwrite_deletes_nothing_while_another_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "exp"
    before = _finished_run(run_dir)
    other = FileLock(run_dir / ".lock")
    other.acquire()
    try:
        with pytest.raises(RunDirError, match="in use") as caught:
            RunDirectory(run_dir, CONFIG, overwrite=True).open()
        assert f"PID {os.getpid()}" in str(caught.value)
        assert str(run_dir) in str(caught.value)
    finally:
        other.release()
    after = _snapshot(run_dir)
    assert after.pop(".lock") == b""
    assert after == before


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(RunDirError, match="not a fedpeft run directory"):
        RunDirectory(tmp_path, CONFIG, overwrite=True).open()

    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_resume_with_the_same_config_keeps_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "exp"
    before = _finished_run(run_dir)

    with RunDirectory(run_dir, dict(CONFIG), resume=True):
        after = _snapshot(run_dir)
    assert after.pop(".lock").startswith(b"PID ")
    assert after == before


def test_resume_with_a_different_config_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "exp"
    before = _finished_run(run_dir)
    changed = {**CONFIG, "federation": {"rounds": 5}}

    with pytest.raises(RunDirError, match=r"federation\.rounds: 3 -> 5") as caught:
        RunDirectory(run_dir, changed, resume=True).open()

    assert "--overwrite" in str(caught.value)
    assert _snapshot(run_dir) == before  # refused before anything is written


def test_resume_of_an_empty_directory_starts_the_run(tmp_path: Path) -> None:
    with RunDirectory(tmp_path / "exp", CONFIG, resume=True) as run_dir:
        assert (run_dir / "config.toml").is_file()


def test_resume_and_overwrite_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="choose one"):
        RunDirectory(tmp_path, CONFIG, resume=True, overwrite=True)


def test_a_second_opener_fails_while_the_first_holds_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "exp"
    with RunDirectory(run_dir, CONFIG):
        with pytest.raises(RunDirError, match=f"PID {os.getpid()}"):
            RunDirectory(run_dir, CONFIG, resume=True).open()
        with pytest.raises(RunDirError, match="is writing to it now"):
            RunDirectory(run_dir, CONFIG).open()  # refused, and told who writes


def test_the_lock_is_released_when_the_run_raises(tmp_path: Path) -> None:
    run_dir = tmp_path / "exp"
    with pytest.raises(RuntimeError, match="boom"), RunDirectory(run_dir, CONFIG):
        raise RuntimeError("boom")

    with RunDirectory(run_dir, CONFIG, resume=True):
        pass


def test_open_run_dir_uses_the_run_config(tmp_path: Path) -> None:
    cfg = load_config(None, [f"output_dir={tmp_path}", "name=abc"])

    with open_run_dir(cfg) as run_dir:
        assert run_dir == tmp_path / "abc"
        stored = tomllib.loads((run_dir / "config.toml").read_text())
    assert stored == cfg.to_dict()
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))
