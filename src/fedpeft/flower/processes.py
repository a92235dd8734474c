"""The processes of a loopback federation: free ports, stopping process
groups, and stopping them when the process that started them dies.

:class:`~fedpeft.flower.deploy.LoopbackFederation` starts every process in
its own process group (so that stopping one also stops what Flower spawned
under it), and stops them when its ``with`` block ends. A SIGKILL, or a
SIGTERM that no handler turns into an exception, skips that: the SuperLink,
SuperNodes and node workers would run on, holding ports and memory.

:class:`Reaper` starts a small guard process (this file run as a script, so
it imports nothing of fedpeft or Flower) that reads the groups to guard from
a pipe. The kernel closes the pipe when the starting process ends, however it
ends; at end of file the guard sends SIGTERM to every group still guarded and
SIGKILL after a grace period. A normal stop releases each group first, and
the guard exits without touching anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection before ``deadline``
    (a ``time.monotonic()`` value)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` seconds
    (and SIGKILL what is left of the group of a process that has ended)."""
    if proc.poll() is not None:
        _signal({proc.pid}, signal.SIGKILL)  # leftover children
        return
    _signal({proc.pid}, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    _signal({proc.pid}, signal.SIGKILL)
    proc.wait()


class Reaper:
    """A guard process that kills the guarded process groups if this process
    dies before releasing them.

    Args:
        grace: Seconds between SIGTERM and SIGKILL.
    """

    def __init__(self, grace: float = 5.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__)), str(grace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            # Out of this process's group: a Ctrl-C on the terminal must not
            # stop the guard before it has stopped the others.
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        self._pipe: IO[str] = self._proc.stdin

    def guard(self, pgid: int) -> None:
        """Kill group ``pgid`` should this process die first."""
        self._send(f"+{pgid}")

    def release(self, pgid: int) -> None:
        """No longer guard ``pgid`` (it was stopped, or is stopped by others)."""
        self._send(f"-{pgid}")

    def close(self, timeout: float = 30.0) -> None:
        """End the guard; the groups still guarded get stopped."""
        if not self._pipe.closed:
            self._pipe.close()
        self._proc.wait(timeout)

    def _send(self, line: str) -> None:
        self._pipe.write(line + "\n")
        self._pipe.flush()


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(groups: set[int], sig: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _reap(groups: set[int], grace: float) -> None:
    """SIGTERM every group, SIGKILL whatever is left after ``grace`` seconds."""
    _signal(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(g) for g in groups):
        time.sleep(0.05)
    _signal(groups, signal.SIGKILL)


def main(grace: float) -> None:
    """Guard the groups named on standard input until it closes."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # outlive whoever signals our parent
    groups: set[int] = set()
    for line in sys.stdin:
        sign, pgid = line[:1], int(line[1:])
        if sign == "+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    if groups:
        _reap(groups, grace)


if __name__ == "__main__":
    main(float(sys.argv[1]))
