"""``flower-supernode`` with shorter waits: ``python -m fedpeft.flower.supernode``
takes flower-supernode's arguments, scales the SuperNode's idle sleeps by
``FEDPEFT_SUPERNODE_SLEEP_SCALE`` (default 0.1: 3 s becomes 0.3 s) and shortens
its object-pull backoff (:mod:`fedpeft.flower.latency`), then runs Flower's own
entry point; nothing else changes.
"""

from __future__ import annotations

import os
import sys

from fedpeft.flower.latency import shorten_supernode_waits

SCALE_ENV = "FEDPEFT_SUPERNODE_SLEEP_SCALE"


def main() -> None:
    from flwr.supernode.cli import flower_supernode

    shorten_supernode_waits(float(os.environ.get(SCALE_ENV, "0.1")))
    sys.argv = ["flower-supernode", *sys.argv[1:]]
    flower_supernode()


if __name__ == "__main__":
    main()
