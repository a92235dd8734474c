"""The client's side of secure sums over remote clients
(:mod:`fedpeft.remote.secure_sum` has the protocol's wire format and the
server's side).

A node replays the server's merge on its own update with a :class:`ReplaySum`
to get the vector it contributes to a pass (:func:`captured_vector`), and runs
the protocol's stages for the passes in flight with :class:`ClientSessions`,
including pass 0's keys made early, with the task
(:meth:`ClientSessions.advertise_early`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedpeft.aggregation.mean import flatten
from fedpeft.remote.envelope import Envelope, blob
from fedpeft.remote.secure_sum import EARLIER, SCOPES, params_from_header
from fedpeft.secagg.inprocess import STAGES
from fedpeft.secagg.messages import KeyBroadcast, RoutedShares, UnmaskRequest
from fedpeft.secagg.params import RoundParams
from fedpeft.secagg.protocol import (
    ClientState,
    client_advertise_keys,
    client_mask_input,
    client_share_keys,
    client_unmask,
)
from fedpeft.seeding import stream
from fedpeft.server.aggregators import SecureSum
from fedpeft.types import Params

_NO_PARAMS = RoundParams(0, 0, 0, 0, 0.0, b"", (), ())
"""Stand-in parameters of keys made before the round's are known."""


class Captured(BaseException):
    """Raised by :class:`ReplaySum` at the pass being run: carries this
    client's vector. A ``BaseException`` so no ``except Exception`` in the
    merge code can swallow it."""

    def __init__(self, vector: Params) -> None:
        super().__init__("captured")
        self.vector = vector


@dataclass
class ReplaySum(SecureSum):
    """A client's stand-in for the server's secure sum (module docstring):
    passes before :attr:`target` return their published results, pass
    ``target`` raises :class:`Captured` with this client's vector."""

    published: list[Params] = field(default_factory=list)
    target: int = 0

    def __call__(
        self,
        rnd: int,
        vectors: Sequence[Params],
        clip_range: float = 0.0,
        bits: int = 0,
    ) -> Params:
        index = self._passes
        self._passes += 1
        if index < self.target:
            return dict(self.published[index])
        if len(vectors) != 1:
            raise RuntimeError(
                f"a client replays the merge on its own update; got {len(vectors)}"
            )
        raise Captured(vectors[0])


def captured_vector(
    merge: Callable[[], object], replay: ReplaySum, published: list[Params], target: int
) -> Params:
    """This client's vector for pass ``target`` of ``merge`` (which must run
    the server's merge code on this client's update with ``replay`` as its
    secure sum).

    Raises:
        RuntimeError: the merge finished without reaching pass ``target``.
    """
    replay.published, replay.target = published, target
    try:
        merge()
    except Captured as got:
        return got.vector
    raise RuntimeError(f"the merge has no secure-sum pass {target}")


def published_sums(arrays: Mapping[str, np.ndarray]) -> list[Params]:
    """The earlier passes' results carried in a mask request."""
    out: dict[int, Params] = {}
    for name, value in arrays.items():
        if name.startswith(EARLIER):
            index, key = name[len(EARLIER) :].split("/", 1)
            out.setdefault(int(index), {})[key] = value
    return [out[i] for i in sorted(out)]


@dataclass
class ClientSessions:
    """A client's side of the passes in flight: one protocol state per
    (scope, round, pass). ``vector(scope, round, pass, published)`` gives this
    client's input when the mask stage asks for it."""

    client_id: int
    seed: int
    secure: bool
    vector: Callable[[str, int, int, list[Params]], Params]
    states: dict[tuple[str, int, int], ClientState] = field(default_factory=dict)
    early: dict[tuple[str, int], ClientState] = field(default_factory=dict)
    """(scope, round) -> pass 0's keys made with the task, before the round's
    parameters and this client's protocol index are known."""

    def _stream(
        self, key: tuple[str, int, int], stage: str
    ) -> np.random.Generator | None:
        """The seeded stream of ``stage`` of pass ``key`` (``None``: a secure
        run draws from the OS)."""
        if self.secure:
            return None
        return stream(
            self.seed,
            "secagg",
            key[1],
            SCOPES.index(key[0]),
            key[2],
            self.client_id,
            STAGES.index(stage),
        )

    def advertise_early(self, scope: str, rnd: int) -> list[str]:
        """Pass 0's public keys of the merge of ``(scope, rnd)`` (hex), made
        now, with the task (module docstring)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown secure-sum scope {scope!r}")
        self._forget_other_merges((scope, rnd))
        rng = self._stream((scope, rnd, 0), "advertise")
        state, advert = client_advertise_keys(
            ClientState(_NO_PARAMS, 0), os.urandom if rng is None else rng.bytes
        )
        self.early[(scope, rnd)] = state
        return [advert.enc_public.hex(), advert.mask_public.hex()]

    def _forget_other_merges(self, merge: tuple[str, int]) -> None:
        for old in [k for k in self.states if k[:2] != merge]:
            del self.states[old]  # a new merge: earlier ones are over
        for gone in [k for k in self.early if k != merge]:
            del self.early[gone]

    def handle(self, env: Envelope) -> Envelope:
        """Run one stage; the reply carries this client's outbound blob."""
        h = env.header
        key = (str(h["scope"]), int(h["round"]), int(h["pass"]))
        stage = h["stage"]
        inbound = env.arrays["blob"].tobytes()
        if stage not in STAGES or key[0] not in SCOPES:
            raise ValueError(f"unknown secure-sum stage {stage!r} of {key[0]!r}")
        rng = self._stream(key, stage)
        random_bytes = os.urandom if rng is None else rng.bytes
        out: Any
        if stage == "share" and h.get("early") and key[2] == 0:
            made = self.early.pop(key[:2], None)
            if made is None:
                raise ValueError(f"secure-sum stage share for {key} without keys")
            self.states[key] = replace(
                made,
                params=params_from_header(h["params"]),
                client_id=int(h["index"]),
            )
        if stage == "advertise":
            self._forget_other_merges(key[:2])
            state = ClientState(params_from_header(h["params"]), int(h["index"]))
            state, out = client_advertise_keys(state, random_bytes)
        elif key not in self.states:
            raise ValueError(f"secure-sum stage {stage} for {key} without advertise")
        else:
            state = self.states[key]
            if stage == "share":
                state, out = client_share_keys(
                    state, KeyBroadcast.decode(inbound), random_bytes
                )
            elif stage == "mask":
                x = self.vector(*key, published_sums(env.arrays))
                flat = flatten(x)
                if flat.size != state.params.length:
                    raise ValueError(
                        f"this client's secure-sum input has {flat.size} values; "
                        f"the round expects {state.params.length}"
                    )
                coin = np.random.default_rng() if rng is None else rng
                state, out = client_mask_input(
                    state, RoutedShares.decode(inbound), flat, coin
                )
            else:
                state, out = client_unmask(state, UnmaskRequest.decode(inbound))
        self.states[key] = state
        return Envelope("reply", {"stage": stage}, {"blob": blob(out.encode())})
