"""An exclusive, non-blocking lock on a file: one writer per run directory.

The lock is ``fcntl.flock`` on an open file description, so it holds against
other processes *and* against a second ``open`` of the same file in this
process; the kernel drops it when the holder exits, even on ``kill -9``, so a
crashed run never leaves a stale lock behind. The holder writes its PID and
host into the file so that the process that is refused can name it.

The file itself is left in place (emptied) on release: unlinking a flock'ed
file lets a process that opened the old inode and a process that creates a
new one both "hold" the lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class LockHeldError(RuntimeError):
    """The lock is held by another open file description (usually a process)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}")
        self.path = path
        self.holder = holder


class FileLock:
    """An exclusive lock on ``path`` (created if missing), taken without waiting.

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and record this process in the file.

        Raises:
            LockHeldError: if another open file description holds it; the
                message names the holder (PID and host) as it recorded itself.
            RuntimeError: if this object already holds the lock.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: Path) -> str | None:
    """Who holds the lock on ``path`` now (None if nobody, or no such file).

    Probes with a non-blocking lock that is dropped at once; creates nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    finally:
        os.close(fd)
    return None


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "another process (it has not written its PID yet)"
