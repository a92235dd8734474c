"""The messages of one round, between the server algorithm and the clients.

A runtime (the embedded engine, Flower) only moves these: it never looks inside
them beyond serializing the arrays. ``payload`` and the reply's ``delta`` are
plain :data:`~fedpeft.types.Params`; bytes on the wire are counted from their
serialized form by the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from fedpeft.types import ClientUpdate, Params

DOWNLINK = "downlink/"
"""Key prefix of payload entries that travel to the client only: side
information for its local algorithm (e.g. a black-box search's covariance),
not part of the state it returns a ΔP of."""

Task = Literal["fit", "probe", "class-stats", "calibrate"]
"""``fit``: train locally and return ΔP; ``probe``: fit the classification head
as a linear probe on the client's features and return it; ``class-stats``:
return per-class feature sums and counts; ``calibrate``: return the summed NLL
of the client's data under the payload's head at each calibration temperature
(the two warm starts)."""


@dataclass(frozen=True)
class Instruction:
    """What the server sends one client in one round.

    Attributes:
        client_id: The client's index in the federation.
        round: The server round (0 for the warm start).
        task: See :data:`Task`.
        payload: The state the client starts from (its slice of the global
            state for mixed adapter sizes), plus any :data:`DOWNLINK` side
            information.
        config: Scalar settings for this round (e.g. ``proximal_mu``).
        shape: The adapter size the client trains (``None``: the run's
            configured adapter; ``(rank, layers)`` for mixed-size LoRA).
    """

    client_id: int
    round: int
    task: Task
    payload: Params
    config: Mapping[str, float] = field(default_factory=dict)
    shape: tuple[int, int] | None = None


def reply_layout(payload: Params) -> Params:
    """The arrays a ``fit`` reply must carry: the payload without its
    :data:`DOWNLINK` entries (their keys and shapes)."""
    return {k: v for k, v in payload.items() if not k.startswith(DOWNLINK)}


@dataclass(frozen=True)
class Reply:
    """What came back from one client: an update, or why there is none.

    Attributes:
        client_id: Who answered (or failed).
        update: For ``fit`` the client's ΔP; for ``probe`` its fitted head as
            ``delta`` (absolute values, not a difference).
        error: Why the client produced nothing (it crashed, vanished, timed
            out); ``update`` is then ``None``.
        bytes_down: Serialized size of the instruction's payload.
        bytes_up: Serialized size of the reply's arrays.
    """

    client_id: int
    update: ClientUpdate | None
    error: str = ""
    bytes_down: int = 0
    bytes_up: int = 0
