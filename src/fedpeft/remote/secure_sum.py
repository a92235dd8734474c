"""Secure sums whose inputs live on remote clients.

The server's merge code (:mod:`fedpeft.server.aggregators`, the strategies'
``round_stats``) is written against a :class:`~fedpeft.server.aggregators.SecureSum`
that is handed every client's vector. In a real federation the server has no
such vectors, so the same code runs on both sides of the wire:

* The **server** runs its merge on *sealed* updates (zeros of the announced
  shapes, :func:`fedpeft.remote.envelope.client_update`). Its secure sum is a
  :class:`RemoteSum`: it ignores the vectors it is handed and runs the four
  SecAgg stages with the clients over the runtime's exchange; what it returns
  is the true sum of the clients' vectors.
* Each **client** (:mod:`fedpeft.remote.secure_client`) replays the same merge
  on its own real update alone, with a ``ReplaySum`` that answers the secure
  sums already completed with their published results and stops at the one
  being run, handing over the vector this client contributes to it.

The code path is deterministic given the client's update and the published
sums, so a client contributes exactly the vector the in-process engine would
have built for it, without a second implementation of any aggregation rule.
Pass ``k`` of a merge is the k-th call of the secure sum in it.

**Advertise rides on the task.** The first stage of a pass (advertise: two
fresh public keys per client) needs nothing from the round but the client, so
for pass 0 of every merge the keys travel in the task's reply
(:data:`ADVERTISE`, ``ClientSessions.advertise_early``); the round's
parameters and each client's protocol index follow with the share stage. A
pass-0 secure sum is then three exchanges after the task instead of four
(each costs ~0.5 s of message routing on a Flower deployment,
docs/benchmarks.md). The keys are drawn from the same stream as a separate
advertise stage would draw them, so results do not change.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpeft.aggregation.mean import flatten, unflatten
from fedpeft.remote.envelope import Arrays, Envelope, blob
from fedpeft.secagg import InsufficientSurvivorsError, SecAggConfig
from fedpeft.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    SharePackage,
    UnmaskResponse,
)
from fedpeft.secagg.params import RoundParams, make_round_params
from fedpeft.secagg.protocol import (
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
)
from fedpeft.secagg.server import ServerState
from fedpeft.seeding import stream
from fedpeft.server.aggregators import SecureSum
from fedpeft.types import Params

logger = logging.getLogger(__name__)

SCOPES = ("fit", "probe", "class-stats", "calibrate")
SERVER = 1 << 30
"""Stream key of the server's public randomness (clients use their ids)."""
ADVERTISE = "advertise"
"""Header flag of a task request: reply with pass 0's public keys."""
KEYS = "secagg_keys"
"""Header field of a task reply: pass 0's public keys (hex)."""
EARLIER = "earlier/"
"""Array-name prefix of the published results of a merge's earlier passes."""

Exchange = Callable[[Mapping[int, Envelope]], dict[int, Envelope | str]]
"""Send one request per client id; per client its reply or why there is none."""


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


# ------------------------------------------------------------ server side
@dataclass
class RemoteSum(SecureSum):
    """The server's secure sum over remote clients (module docstring).

    Attributes:
        exchange: Delivers one request per client and brings the replies back.
        scope: ``(task, round)`` of the merge being run; clients replay the
            merge that belongs to it.
        participants: Client ids whose (sealed) updates the merge holds, in
            the merge's order; set by the runtime after each exchange.
    """

    exchange: Exchange | None = None
    scope: tuple[str, int] = ("fit", 0)
    participants: list[int] = field(default_factory=list)
    adverts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    """Client id -> pass 0's public keys (encryption, mask), from the task's
    replies (module docstring); set by the runtime after each exchange."""
    _results: list[Params] = field(default_factory=list)

    def reset(self) -> None:
        super().reset()
        self._results = []

    def __call__(
        self,
        rnd: int,
        vectors: Sequence[Params],
        clip_range: float = 0.0,
        bits: int = 0,
    ) -> Params:
        """Σ of the participants' own vectors for this pass; ``vectors`` (the
        server's sealed stand-ins) give only the layout."""
        if self.exchange is None:
            raise RuntimeError("RemoteSum has no exchange; the runtime sets it")
        if not vectors:
            raise ValueError(f"round {rnd}: a secure sum with no participant")
        config = self.widened(clip_range, bits)
        ids = list(self.participants)
        if len(ids) != len(vectors):
            raise RuntimeError(
                f"round {rnd}: {len(vectors)} sealed updates for participants {ids}"
            )
        session = _Session(self, rnd, ids, config, vectors[0])
        total = session.run()
        self._results.append(dict(total))  # the merge may pop keys from it
        self._passes += 1
        return total


class _Session:
    """One pass of the protocol driven by the server over the exchange."""

    def __init__(
        self,
        owner: RemoteSum,
        rnd: int,
        ids: list[int],
        config: SecAggConfig,
        like: Params,
    ) -> None:
        self.owner, self.rnd, self.ids, self.like = owner, rnd, ids, like
        task, scope_round = owner.scope
        rng = (
            None
            if config.secure
            else stream(
                owner.seed,
                "secagg",
                scope_round,
                SCOPES.index(task),
                owner._passes,
                SERVER,
            )
        )
        random_bytes = os.urandom if rng is None else rng.bytes
        start = time.perf_counter()
        self.params = make_round_params(
            config, len(ids), flatten(like).size, random_bytes
        )
        self.state = ServerState(self.params)
        self.server_seconds = time.perf_counter() - start
        self.sent = 0
        self.received = 0

    def run(self) -> Params:
        p = self.params
        alive = {u: k for u, k in enumerate(self.ids)}  # protocol index -> client
        head = {"params": params_to_header(p)}
        early = self.owner.adverts if self.owner._passes == 0 else {}
        if all(k in early for k in alive.values()):
            up = {u: AdvertiseKeys(u, *early[k]).encode() for u, k in alive.items()}
            share_head = {**head, "early": True}
        else:
            up = self._stage("advertise", alive, {u: b"" for u in alive}, head)
            share_head = {}
        self.state, down = self._server(server_collect_keys, AdvertiseKeys.decode, up)
        up = self._stage("share", _left(alive, up), down, share_head)
        self.state, down = self._server(server_route_shares, SharePackage.decode, up)
        earlier: Arrays = {
            f"{EARLIER}{i}/{k}": v
            for i, r in enumerate(self.owner._results)
            for k, v in r.items()
        }
        up = self._stage("mask", _left(alive, up), down, arrays=earlier)
        self.state, down = self._server(server_collect_masked, MaskedInput.decode, up)
        up = self._stage("unmask", _left(alive, up), down)
        start = time.perf_counter()
        self.state, result = server_unmask(
            self.state, [UnmaskResponse.decode(b) for b in up.values()]
        )
        self.server_seconds += time.perf_counter() - start
        self._account(result.error_bound, len(result.dropped))
        if result.dropped:
            logger.warning(
                "round %d: secure sum over %d clients; %s dropped out",
                self.rnd,
                len(result.survivors),
                [self.ids[u] for u in result.dropped],
            )
        return unflatten(result.values, like=self.like)

    def _stage(
        self,
        stage: str,
        alive: Mapping[int, int],
        inbound: Mapping[int, bytes],
        header: Mapping[str, Any] | None = None,
        arrays: Arrays | None = None,
    ) -> dict[int, bytes]:
        """Send each live client its inbound blob; their outbound blobs by
        protocol index (a client that fails or is left out drops out)."""
        task, rnd = self.owner.scope
        requests = {}
        for u, k in alive.items():
            if u not in inbound:
                continue
            head = {
                "stage": stage,
                "scope": task,
                "round": rnd,
                "pass": self.owner._passes,
                "index": u,
                **(header or {}),
            }
            requests[k] = Envelope(
                "secagg", head, {"blob": blob(inbound[u]), **(arrays or {})}
            )
            self.received += len(inbound[u])
        assert self.owner.exchange is not None
        replies = self.owner.exchange(requests)
        out: dict[int, bytes] = {}
        for u, k in alive.items():
            reply = replies.get(k)
            if isinstance(reply, Envelope) and reply.kind == "reply":
                data = reply.arrays.get("blob")
                if data is not None:
                    out[u] = data.tobytes()
                    self.sent += len(out[u])
                    continue
            why = reply.error if isinstance(reply, Envelope) else reply
            logger.warning(
                "round %d: client %d left the secure sum at stage %s (%s)",
                self.rnd,
                k,
                stage,
                why or "no reply",
            )
        if not out:
            raise InsufficientSurvivorsError(
                f"round {self.rnd}: no client answered secure-sum stage {stage}"
            )
        return out

    def _server(
        self,
        step: Callable[[ServerState, list[Any]], tuple[ServerState, Mapping[int, Any]]],
        decode: Callable[[bytes], Any],
        blobs: Mapping[int, bytes],
    ) -> tuple[ServerState, dict[int, bytes]]:
        start = time.perf_counter()
        state, out = step(self.state, [decode(b) for b in blobs.values()])
        encoded = {u: m.encode() for u, m in out.items()}
        self.server_seconds += time.perf_counter() - start
        return state, encoded

    def _account(self, error_bound: float, dropped: int) -> None:
        acc = self.owner.stats
        for key, value in (
            ("secagg_dropped", float(dropped)),
            ("secagg_bytes_up", float(self.sent)),
            ("secagg_bytes_down", float(self.received)),
            ("secagg_server_seconds", self.server_seconds),
            ("secagg_passes", 1),
        ):
            acc[key] = acc.get(key, 0.0) + value
        acc["secagg_error_bound"] = max(acc.get("secagg_error_bound", 0.0), error_bound)


def _left(alive: Mapping[int, int], answered: Mapping[int, bytes]) -> dict[int, int]:
    return {u: k for u, k in alive.items() if u in answered}
