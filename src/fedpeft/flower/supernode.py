"""``flower-supernode`` with shorter idle waits.

``python -m fedpeft.flower.supernode ARGS`` takes flower-supernode's arguments.

flwr 1.42's SuperNode sleeps 3 s after every pull that found no message and
0.5 s between checks for a finished reply (``time.sleep`` calls hard-coded in
``flwr.supernode.start_client_internal``). Between the many short messages of
a round (a task, then four secure-sum stages per pass) these waits, not the
compute, set the round time. This entry point scales those sleeps by
``FEDPEFT_SUPERNODE_SLEEP_SCALE`` (default 0.1: 0.3 s and 0.05 s) and then runs
Flower's own ``flower-supernode`` with the same arguments; nothing else changes.
The price is idle polling: more pulls per second against the SuperLink.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

SCALE_ENV = "FEDPEFT_SUPERNODE_SLEEP_SCALE"


class _ScaledTime:
    """The ``time`` module with ``sleep`` scaled."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.scale)


def main() -> None:
    import flwr.supernode.start_client_internal as internal
    from flwr.supernode.cli import flower_supernode

    scale = float(os.environ.get(SCALE_ENV, "0.1"))
    setattr(internal, "time", _ScaledTime(scale))  # noqa: B010 - see docstring
    sys.argv = ["flower-supernode", *sys.argv[1:]]
    flower_supernode()


if __name__ == "__main__":
    main()
