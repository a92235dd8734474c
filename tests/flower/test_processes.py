"""The reaper stops a federation's process groups when the process that started
them dies without stopping them (SIGKILL), and leaves them alone when they are
released."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from fedpeft.flower.processes import Reaper

# A "deployer": starts a process group of its own (a shell and its child, as
# Flower's processes spawn theirs), guards it, says its pid, then waits.
DEPLOYER = """
import subprocess, sys, time
from fedpeft.flower.processes import Reaper
reaper = Reaper(grace=1.0)
group = subprocess.Popen(
    ["sh", "-c", "sleep 600 & wait"], start_new_session=True
)
reaper.guard(group.pid)
print(group.pid, flush=True)
time.sleep(600)
"""


def _gone(pgid: int, within: float) -> bool:
    """Whether no live process of group ``pgid`` is left within ``within`` s
    (zombies, which only wait for a parent to reap them, count as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _live_members(pgid):
            return True
        time.sleep(0.05)
    return False


def _live_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_a_killed_deployer_leaves_no_process_behind() -> None:
    deployer = subprocess.Popen(
        [sys.executable, "-c", DEPLOYER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert deployer.stdout is not None
        pgid = int(deployer.stdout.readline())
        deadline = time.monotonic() + 10.0  # the shell, then its sleep
        while len(_live_members(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_live_members(pgid)) == 2
        deployer.send_signal(signal.SIGKILL)  # no cleanup code can run
        deployer.wait()
        assert _gone(pgid, within=10.0)
    finally:
        deployer.kill()
        deployer.wait()


def test_released_groups_are_left_alone_and_guarded_ones_stopped() -> None:
    reaper = Reaper(grace=1.0)
    kept = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        reaper.guard(kept.pid)
        reaper.release(kept.pid)
        reaper.close()
        assert kept.poll() is None  # released: not touched
    finally:
        kept.kill()
        kept.wait()
    # A group still guarded at close is stopped (SIGTERM first).
    reaper = Reaper(grace=1.0)
    stopped = subprocess.Popen(["sleep", "600"], start_new_session=True)
    reaper.guard(stopped.pid)
    reaper.close()
    assert stopped.wait(5.0) == -signal.SIGTERM
