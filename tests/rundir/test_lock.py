"""The run directory lock: one holder per file, across processes and within one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedpeft.rundir.lock import FileLock, LockHeldError, lock_holder

HOLD = """
import sys
from pathlib import Path
from fedpeft.rundir.lock import FileLock
lock = FileLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def _holder_process(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with FileLock(path):
        with pytest.raises(LockHeldError, match=f"PID {os.getpid()} on host"):
            FileLock(path).acquire()  # its own open file description conflicts
        assert lock_holder(path) is not None and str(os.getpid()) in lock_holder(path)
    assert lock_holder(path) is None
    assert path.read_text() == ""  # emptied on release


def test_another_process_holding_the_lock_is_named_by_pid(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    child = _holder_process(path)
    try:
        with pytest.raises(LockHeldError) as caught:
            FileLock(path).acquire()
        assert f"PID {child.pid} " in caught.value.holder
    finally:
        child.kill()  # no release call: the kernel drops the lock
        child.wait()

    with FileLock(path) as lock:
        assert lock.held


def test_the_lock_is_released_after_an_exception(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with pytest.raises(ZeroDivisionError), FileLock(path):
        _ = 1 / 0

    with FileLock(path) as lock:
        assert lock.held


def test_release_is_idempotent_and_reacquire_works(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / ".lock")
    lock.acquire()
    with pytest.raises(RuntimeError, match="already locked"):
        lock.acquire()
    lock.release()
    lock.release()
    lock.acquire()
    assert lock.held
    lock.release()


def test_lock_holder_creates_nothing(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / ".lock") is None
    assert list(tmp_path.iterdir()) == []
