"""A merge's first secure-sum stages run ahead, on the merge before
(:mod:`fedpeft.remote.secure_sum`'s module docstring says why and how).

:func:`keys_ahead` makes the key broadcast of the upcoming merge's pass 0 from
the keys its clients advertised with the task before; it rides on the unmask
requests of the current pass 0. :func:`shares_ahead` routes the shares that
come back with the unmask replies. What results, a :class:`Prepared`, is the
server's state of that pass after its share stage, and each client's routed
shares, which ride on the upcoming merge's task requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedpeft.remote.envelope import Arrays, Envelope, blob
from fedpeft.remote.secure_wire import (
    NEXT,
    SETUP,
    Merge,
    params_to_header,
    quantizer,
)
from fedpeft.secagg import ProtocolError, SecAggConfig, SecAggError
from fedpeft.secagg.messages import AdvertiseKeys, MaskedInput, SharePackage
from fedpeft.secagg.params import RoundParams, make_round_params
from fedpeft.secagg.protocol import server_collect_keys, server_route_shares
from fedpeft.secagg.server import ServerState
from fedpeft.secagg.shamir import RandomBytes

logger = logging.getLogger(__name__)

Riders = dict[int, tuple[dict[str, Any], Arrays]]
"""Protocol index -> header fields and arrays to add to its request."""


@dataclass
class Prepared:
    """Pass 0 of a merge whose keys and shares went ahead (module docstring).

    Attributes:
        scope: ``(task, round)`` of the merge.
        cohort: Its clients; a client's protocol index is its position.
        state: The server's state after routing the shares (D is fixed when
            the pass runs).
        routed: Client id -> the shares routed to it (encoded).
        sent: Bytes the clients sent in the stages gone ahead.
        received: Bytes they received.
        seconds: The server's seconds in those stages.
    """

    scope: tuple[str, int]
    cohort: list[int]
    state: ServerState
    routed: dict[int, bytes]
    sent: int = 0
    received: int = 0
    seconds: float = 0.0


def keys_ahead(
    config: SecAggConfig,
    random_bytes: RandomBytes,
    upcoming: Merge,
    adverts: Mapping[int, tuple[bytes, bytes]],
    recipients: Mapping[int, int],
) -> tuple[Prepared | None, Riders]:
    """The upcoming merge's pass 0 after its advertise stage, and its key
    broadcast as riders on the requests to ``recipients`` (protocol index ->
    client id); ``(None, {})`` unless every client of that merge advertised
    keys (``adverts``, by client id) and is among the recipients.

    ``random_bytes`` is the server's public randomness of that pass: the
    round parameters are drawn as the pass itself would draw them, with D
    fixed later (:func:`fedpeft.secagg.params.resized`).
    """
    task, rnd, cohort = upcoming
    index = {k: u for u, k in enumerate(cohort)}
    ready = set(recipients.values()) & adverts.keys()
    if len(cohort) < 2 or not index.keys() <= ready:
        return None, {}
    start = time.perf_counter()
    try:
        params = make_round_params(config, len(cohort), 1, random_bytes)
        keys = [AdvertiseKeys(index[k], *adverts[k]) for k in cohort]
        state, bcast = server_collect_keys(ServerState(params), keys)
    except (SecAggError, ValueError) as err:
        logger.info("%s round %d: no keys ahead (%s)", task, rnd, err)
        return None, {}
    ahead = Prepared((task, rnd), list(cohort), state, {})
    ahead.seconds = time.perf_counter() - start
    riders: Riders = {}
    header = params_to_header(params)
    for u, k in recipients.items():
        if k in index:
            v = index[k]
            head = {"scope": task, "round": rnd, "index": v, "params": header}
            data = bcast[v].encode()
            ahead.received += len(data)
            riders[u] = ({NEXT: head}, {SETUP: blob(data)})
    return ahead, riders


def shares_ahead(ahead: Prepared, replies: Mapping[int, Envelope]) -> Prepared | None:
    """``ahead`` with its shares routed, if every client of it sent them with
    its unmask reply (``None`` otherwise: that merge runs every stage)."""
    task, rnd = ahead.scope
    blobs = [r.arrays[SETUP].tobytes() for r in replies.values() if SETUP in r.arrays]
    if len(blobs) < len(ahead.cohort):
        logger.info("%s round %d: not every client shared ahead", task, rnd)
        return None
    start = time.perf_counter()
    try:
        packages = [SharePackage.decode(b) for b in blobs]
        ahead.state, routed = server_route_shares(ahead.state, packages)
    except (SecAggError, ValueError) as err:
        logger.info("%s round %d: no shares ahead (%s)", task, rnd, err)
        return None
    ahead.seconds += time.perf_counter() - start
    ahead.sent += sum(len(b) for b in blobs)
    ahead.routed = {ahead.cohort[v]: m.encode() for v, m in routed.items()}
    return ahead


def check_masked(
    got: tuple[bytes, list[float]] | None, u: int, params: RoundParams
) -> MaskedInput:
    """A client's masked input that came with its task reply (``got``: the
    blob and the quantizer it was made for), if it was made for the pass as
    the server runs it (``u``: the client's protocol index).

    Raises:
        ValueError: none came, or one made for another quantizer.
        SecAggError: a garbled one.
    """
    if got is None:
        raise ValueError("sent no masked input")
    if got[1] != quantizer(params):
        raise ValueError(
            f"masked its input for D, b, q, r = {got[1]}, not {quantizer(params)}"
        )
    m = MaskedInput.decode(got[0])
    if (m.client_id, m.bits, m.length) != (u, params.bits, params.length):
        raise ProtocolError(
            f"sent a masked input of index {m.client_id}, {m.length} values of "
            f"{m.bits} bits; expected index {u}, {params.length} of {params.bits}"
        )
    if m.length and int(m.vector().max()) >> params.bits:
        raise ProtocolError(f"sent values >= 2^{params.bits}")
    return m
