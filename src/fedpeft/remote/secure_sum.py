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

**The first stages ride on other messages.** Every stage costs one message
exchange (about 0.5 s of routing on a Flower deployment, docs/benchmarks.md),
so a pass is carried on the messages the round sends anyway where it can:

* *Ahead* (pass 0 of a merge the server can foresee: the loop's next round,
  its client sample drawn from the round's seed): the task of the merge before
  carries ``NEXT`` and its reply the next merge's keys; the unmask request of
  the merge before (its pass 0) carries the key broadcast (``SETUP``) and its
  reply the clients' encrypted shares. The next merge's task then brings each
  client its routed shares (``ROUTED``), and the client masks its update right
  after training and sends the masked input with its reply (``MASKED``). Only
  the unmask stage is an exchange of its own: a secure round costs one
  exchange more than a plain one, not four. The stages run in the protocol's
  order, each on fresh keys of the round, so SecAgg's argument holds
  unchanged: only the time between the stages differs. A client that drops
  after sharing (in training, say) is recovered from its shares as usual.
* *Early* (a merge not foreseen, or whose cohort did not all share ahead):
  the task's reply carries pass 0's keys (``ADVERTISE``/``KEYS``), and the
  share, mask and unmask stages are exchanges of their own.

Every key, share and rounding coin is drawn from the stream of its (merge,
pass, client, stage) either way, so both routes give the same sum to the bit;
D, b, q and r are fixed only at the mask stage
(:func:`fedpeft.secagg.params.resized`), on both sides, and a masked input
made for other ones is left out of the sum (its masks are recovered).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpeft.aggregation.mean import flatten, unflatten
from fedpeft.remote.envelope import Arrays, Envelope, blob
from fedpeft.remote.secure_ahead import (
    Prepared,
    Riders,
    check_masked,
    keys_ahead,
    shares_ahead,
)
from fedpeft.remote.secure_wire import (
    ADVERTISE,
    EARLIER,
    KEYS,
    MASKED,
    NEXT,
    NEXT_KEYS,
    PREPARED,
    QUANTIZER,
    ROUTED,
    SCOPES,
    SERVER,
    Merge,
    params_to_header,
    public_keys,
)
from fedpeft.secagg import (
    InsufficientSurvivorsError,
    SecAggConfig,
    SecAggError,
)
from fedpeft.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    SharePackage,
    UnmaskResponse,
)
from fedpeft.secagg.params import make_round_params, resized
from fedpeft.secagg.protocol import (
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
)
from fedpeft.secagg.server import ServerState
from fedpeft.secagg.shamir import RandomBytes
from fedpeft.seeding import stream
from fedpeft.server.aggregators import SecureSum
from fedpeft.types import Params

logger = logging.getLogger(__name__)

Exchange = Callable[[Mapping[int, Envelope]], dict[int, Envelope | str]]
"""Send one request per client id; per client its reply or why there is none."""


# ------------------------------------------------------------ server side
@dataclass
class RemoteSum(SecureSum):
    """The server's secure sum over remote clients (module docstring).

    Attributes:
        exchange: Delivers one request per client and brings the replies back.
        scope: ``(task, round)`` of the merge being run; clients replay the
            merge that belongs to it.
        participants: Client ids whose (sealed) updates the merge holds, in
            the merge's order; set from each task exchange (:meth:`incoming`).
    """

    exchange: Exchange | None = None
    scope: tuple[str, int] = ("fit", 0)
    participants: list[int] = field(default_factory=list)
    adverts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    """Client id -> pass 0's public keys (encryption, mask), early."""
    upcoming: Merge | None = None
    """The merge after this one, whose pass 0 goes ahead where it can."""
    next_adverts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    """Client id -> the upcoming merge's pass-0 public keys."""
    prepared: Prepared | None = None
    """This merge's pass 0 as far as it went ahead."""
    masked: dict[int, tuple[bytes, list[float]]] = field(default_factory=dict)
    """Client id -> its masked input of a pass 0 gone ahead, and its quantizer."""
    _results: list[Params] = field(default_factory=list)

    def reset(self) -> None:
        super().reset()
        self._results = []

    # ---------------------------------------------------- the task exchange
    def outgoing(
        self,
        scope: tuple[str, int],
        requests: Mapping[int, Envelope],
        upcoming: Merge | None,
    ) -> dict[int, Envelope]:
        """The merge's task requests with what its secure sums ride on them."""
        prep = self.prepared
        if prep is not None and (prep.scope != scope or {*prep.cohort} != {*requests}):
            logger.info(
                "%s round %d: its clients differ from those that shared ahead; "
                "its secure sum runs every stage",
                *scope,
            )
            prep = self.prepared = None
        self.upcoming = upcoming
        out = {}
        for k, env in requests.items():
            head, arrays = dict(env.header), dict(env.arrays)
            if prep is not None:
                head[PREPARED] = prep.state.params.session.hex()
                arrays[ROUTED] = blob(prep.routed[k])
            else:
                head[ADVERTISE] = True
            if upcoming is not None and k in upcoming[2]:
                head[NEXT] = list(upcoming[:2])
            out[k] = Envelope(env.kind, head, arrays)
        return out

    def incoming(
        self,
        scope: tuple[str, int],
        participants: list[int],
        answers: Mapping[int, Envelope | str],
    ) -> None:
        """Take from the task's replies what rides on them."""
        self.scope, self.participants = scope, participants
        replies = {k: a for k, a in answers.items() if isinstance(a, Envelope)}
        self.adverts = {
            k: keys for k in participants if (keys := public_keys(replies.get(k), KEYS))
        }
        self.next_adverts = {
            k: keys for k, a in replies.items() if (keys := public_keys(a, NEXT_KEYS))
        }
        self.masked = {}
        for k in participants:
            a = replies.get(k)
            if a is not None and MASKED in a.arrays:
                q = a.header.get(QUANTIZER)
                self.masked[k] = (a.arrays[MASKED].tobytes(), list(q or []))

    # ---------------------------------------------------- a secure sum
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
        self.config = config
        self.length = flatten(like).size
        self.server_seconds = 0.0
        self.sent = self.received = 0

    def _random(self, scope: tuple[str, int], index: int) -> RandomBytes:
        """The server's public randomness of pass ``index`` of ``scope``."""
        if self.config.secure:
            return os.urandom
        task, rnd = scope
        return stream(
            self.owner.seed, "secagg", rnd, SCOPES.index(task), index, SERVER
        ).bytes

    def run(self) -> Params:
        owner = self.owner
        prep = None
        if owner._passes == 0:  # outgoing() kept it only if it is this merge's
            prep, owner.prepared = owner.prepared, None
        if prep is not None:
            alive, masked = self._masked_ahead(prep)
        else:
            alive, masked = self._masked_now()
        self.state, down = self._server(server_collect_masked, masked)
        ahead, extra = self._next_keys({u: alive[u] for u in down})
        replies = self._stage("unmask", alive, down, extra=extra)
        start = time.perf_counter()
        self.state, result = server_unmask(
            self.state, [UnmaskResponse.decode(b) for b in _blobs(replies).values()]
        )
        self.server_seconds += time.perf_counter() - start
        if ahead is not None:
            owner.prepared = shares_ahead(ahead, replies)
        self._account(result.error_bound, len(result.dropped))
        if result.dropped:
            logger.warning(
                "round %d: secure sum over %d clients; %s dropped out",
                self.rnd,
                len(result.survivors),
                [alive[u] for u in result.dropped],
            )
        return unflatten(result.values, like=self.like)

    def _masked_now(self) -> tuple[dict[int, int], list[MaskedInput]]:
        """Advertise (or the keys that came early), share and mask, each an
        exchange; the clients by protocol index, and the masked inputs."""
        owner = self.owner
        start = time.perf_counter()
        params = make_round_params(
            self.config,
            len(self.ids),
            self.length,
            self._random(owner.scope, owner._passes),
        )
        self.state = ServerState(params)
        self.server_seconds += time.perf_counter() - start
        alive = {u: k for u, k in enumerate(self.ids)}  # protocol index -> client
        head = {"params": params_to_header(params)}
        early = owner.adverts if owner._passes == 0 else {}
        if all(k in early for k in alive.values()):
            up = {u: AdvertiseKeys(u, *early[k]).encode() for u, k in alive.items()}
            share_head = {**head, "early": True}
        else:
            up = _blobs(self._stage("advertise", alive, {u: b"" for u in alive}, head))
            share_head = {}
        keys = [AdvertiseKeys.decode(b) for b in up.values()]
        self.state, down = self._server(server_collect_keys, keys)
        up = _blobs(self._stage("share", _left(alive, up), down, share_head))
        shares = [SharePackage.decode(b) for b in up.values()]
        self.state, down = self._server(server_route_shares, shares)
        earlier: Arrays = {
            f"{EARLIER}{i}/{k}": v
            for i, r in enumerate(owner._results)
            for k, v in r.items()
        }
        up = _blobs(self._stage("mask", _left(alive, up), down, arrays=earlier))
        return alive, [MaskedInput.decode(b) for b in up.values()]

    def _masked_ahead(self, prep: Prepared) -> tuple[dict[int, int], list[MaskedInput]]:
        """Pass 0 gone ahead: the masked inputs came with the task's replies."""
        params = resized(prep.state.params, self.config, self.length)
        self.state = dataclasses.replace(prep.state, params=params)
        self.sent, self.received = prep.sent, prep.received
        self.server_seconds += prep.seconds
        alive = {u: k for u, k in enumerate(prep.cohort)}
        masked = []
        for u, k in alive.items():
            if k not in self.ids:
                continue  # no update from it (it failed, or was rejected)
            self.received += len(prep.routed[k])
            try:
                masked.append(check_masked(self.owner.masked.get(k), u, params))
                self.sent += len(self.owner.masked[k][0])
            except (SecAggError, ValueError) as err:
                logger.warning(
                    "round %d: client %d %s; it is left out of the secure sum",
                    self.rnd,
                    k,
                    err,
                )
        if not masked:
            raise InsufficientSurvivorsError(
                f"round {self.rnd}: no client sent a masked input"
            )
        return alive, masked

    # ---------------------------------------------------- the next merge
    def _next_keys(
        self, recipients: Mapping[int, int]
    ) -> tuple[Prepared | None, Riders]:
        """The upcoming merge's key broadcast, riding on this pass's unmask
        requests when this is pass 0 (``recipients``: protocol index ->
        client id)."""
        owner = self.owner
        nxt = owner.upcoming
        if owner._passes != 0 or nxt is None:
            return None, {}
        random_bytes = self._random((nxt[0], nxt[1]), 0)
        return keys_ahead(
            owner.config, random_bytes, nxt, owner.next_adverts, recipients
        )

    # ---------------------------------------------------- messages
    def _stage(
        self,
        stage: str,
        alive: Mapping[int, int],
        inbound: Mapping[int, bytes],
        header: Mapping[str, Any] | None = None,
        arrays: Arrays | None = None,
        extra: Mapping[int, tuple[dict[str, Any], Arrays]] | None = None,
    ) -> dict[int, Envelope]:
        """Send each live client its inbound blob (and its ``extra`` header
        fields and arrays); the replies by protocol index (a client that
        fails or is left out drops out)."""
        task, rnd = self.owner.scope
        requests = {}
        for u, k in alive.items():
            if u not in inbound:
                continue
            more_head, more_arrays = (extra or {}).get(u, ({}, {}))
            head = {
                "stage": stage,
                "scope": task,
                "round": rnd,
                "pass": self.owner._passes,
                "index": u,
                **(header or {}),
                **more_head,
            }
            requests[k] = Envelope(
                "secagg",
                head,
                {"blob": blob(inbound[u]), **(arrays or {}), **more_arrays},
            )
            self.received += len(inbound[u])
        assert self.owner.exchange is not None
        replies = self.owner.exchange(requests)
        out: dict[int, Envelope] = {}
        for u, k in alive.items():
            reply = replies.get(k)
            if isinstance(reply, Envelope) and reply.kind == "reply":
                data = reply.arrays.get("blob")
                if data is not None:
                    out[u] = reply
                    self.sent += data.size
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
        messages: list[Any],
    ) -> tuple[ServerState, dict[int, bytes]]:
        start = time.perf_counter()
        state, out = step(self.state, messages)
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


def _blobs(replies: Mapping[int, Envelope]) -> dict[int, bytes]:
    return {u: r.arrays["blob"].tobytes() for u, r in replies.items()}


def _left(alive: Mapping[int, int], answered: Mapping[int, Any]) -> dict[int, int]:
    return {u: k for u, k in alive.items() if u in answered}
