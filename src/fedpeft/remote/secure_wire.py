"""What secure sums put on the runtime's messages
(:mod:`fedpeft.remote.secure_sum` has the protocol's route over them):
header fields and array names, and the round's public parameters as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpeft.remote.envelope import PROTOCOL, Envelope
from fedpeft.secagg.params import RoundParams

SCOPES = ("fit", "probe", "class-stats", "calibrate")
SERVER = 1 << 30
"""Stream key of the server's public randomness (clients use their ids)."""
ADVERTISE = "advertise"
"""Header flag of a task request: reply with pass 0's public keys."""
KEYS = "secagg_keys"
"""Header field of a task reply: pass 0's public keys (hex)."""
NEXT = "secagg_next"
"""Header field of a task request: ``[scope, round]`` of the next merge, whose
pass-0 keys the reply brings (``NEXT_KEYS``); of an unmask request: that
merge's round parameters and the client's index, with its key broadcast."""
NEXT_KEYS = "secagg_next_keys"
"""Header field of a task reply: the next merge's pass-0 public keys (hex)."""
PREPARED = "secagg_prepared"
"""Header field of a task request whose pass 0 went ahead: its session (hex)."""
QUANTIZER = "secagg_quantizer"
"""Header field of a task reply with a masked input: the D, b, q, r used."""
SETUP = f"{PROTOCOL}setup"
"""Array of an unmask request (reply): the next merge's key broadcast (shares)."""
ROUTED = f"{PROTOCOL}routed"
"""Array of a task request: the shares routed to the client, gone ahead."""
MASKED = f"{PROTOCOL}masked"
"""Array of a task reply: the client's masked input of pass 0."""
EARLIER = "earlier/"
"""Array-name prefix of the published results of a merge's earlier passes."""

Merge = tuple[str, int, list[int]]
"""A merge's scope, round and clients (in protocol-index order)."""


def quantizer(p: RoundParams) -> list[float]:
    """What a masked input was made for besides the keys: D, b, q and r."""
    return [p.length, p.bits, p.value_bits, p.clip_range]


# ------------------------------------------------------------ round params
def params_to_header(p: RoundParams) -> dict[str, Any]:
    """The round's public parameters as JSON-safe values."""
    return {
        "num_clients": p.num_clients,
        "length": p.length,
        "bits": p.bits,
        "value_bits": p.value_bits,
        "clip_range": p.clip_range,
        "session": p.session.hex(),
        "graph": [sorted(n) for n in p.graph],
        "thresholds": list(p.thresholds),
    }


def params_from_header(h: Mapping[str, Any]) -> RoundParams:
    """Inverse of :func:`params_to_header`."""
    return RoundParams(
        num_clients=int(h["num_clients"]),
        length=int(h["length"]),
        bits=int(h["bits"]),
        value_bits=int(h["value_bits"]),
        clip_range=float(h["clip_range"]),
        session=bytes.fromhex(h["session"]),
        graph=tuple(frozenset(int(v) for v in n) for n in h["graph"]),
        thresholds=tuple(int(t) for t in h["thresholds"]),
    )


def public_keys(answer: Envelope | None, field_name: str) -> tuple[bytes, bytes] | None:
    """A pair of public keys (hex) in a reply's header (``None``: absent or
    garbled; the pass then runs without them)."""
    if answer is None or answer.kind != "reply":
        return None
    keys = answer.header.get(field_name)
    try:
        enc, mask = (bytes.fromhex(str(k)) for k in keys)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return enc, mask
