"""Shorter waits inside Flower 1.42 processes, where they, not the compute,
set the round time.

Measured on a loopback federation (docs/benchmarks.md, "Flower"): each
message between the ServerApp and a client waited on

* the SuperNode's sleep after an empty pull from the SuperLink (3 s) and
  between checks for a finished reply (0.5 s), hard-coded ``time.sleep`` calls
  in ``flwr.supernode.start_client_internal``;
* Flower's object pulls (``pull_objects``), which retry an object that is not
  stored yet after 1 s, doubling to 10 s: a message's metadata routinely
  arrives before its arrays, so most messages paid a second here, on the
  SuperNode and again on the ServerApp.

:func:`shorten_supernode_waits` (the SuperNode wrapper,
:mod:`fedpeft.flower.supernode`) and :func:`shorten_pull_backoff` (also the
ServerApp) replace those waits in the running process only; nothing in Flower
changes on disk. Shorter sleeps cost idle polling: more requests per second
against the SuperLink.
"""

from __future__ import annotations

import functools
import time
from typing import Any

PULL_BACKOFF = (0.01, 0.2)
"""(first, largest) wait in seconds before retrying an object not stored yet."""


class _ScaledTime:
    """The ``time`` module with ``sleep`` scaled."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.scale)


def shorten_pull_backoff(*modules: Any) -> None:
    """Give ``pull_objects`` as each module imported it :data:`PULL_BACKOFF`."""
    from flwr.supercore.inflatable import inflatable_utils

    fast = functools.partial(
        inflatable_utils.pull_objects,
        initial_backoff=PULL_BACKOFF[0],
        backoff_cap=PULL_BACKOFF[1],
    )
    for module in modules:
        setattr(module, "pull_objects", fast)  # noqa: B010 - module docstring


def shorten_supernode_waits(scale: float) -> None:
    """The SuperNode's sleeps × ``scale`` and its object pulls' backoff."""
    import flwr.supernode.start_client_internal as internal

    setattr(internal, "time", _ScaledTime(scale))  # noqa: B010 - module docstring
    shorten_pull_backoff(internal)


def shorten_serverapp_waits() -> None:
    """The ServerApp's object pulls' backoff (its grid's replies)."""
    from flwr.superlink.grid import http_grid

    shorten_pull_backoff(http_grid)
