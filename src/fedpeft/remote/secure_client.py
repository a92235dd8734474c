"""The client's side of secure sums over remote clients
(:mod:`fedpeft.remote.secure_sum` has the protocol's wire format and the
server's side).

A node replays the server's merge on its own update with a :class:`ReplaySum`
to get the vector it contributes to a pass (:func:`captured_vector`), and runs
the protocol's stages for the passes in flight with :class:`ClientSessions`,
including those that ride on other messages: pass 0's keys made with a task
(:meth:`ClientSessions.advertise_early`), shares made with the unmask request
of the merge before (:meth:`ClientSessions.share_ahead`), and the masked
input made right after training (:meth:`ClientSessions.mask_ahead`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedpeft.aggregation.mean import flatten
from fedpeft.remote.envelope import Envelope, blob
from fedpeft.remote.secure_wire import (
    EARLIER,
    NEXT,
    SCOPES,
    SETUP,
    params_from_header,
    quantizer,
)
from fedpeft.secagg import SecAggConfig, SecAggError
from fedpeft.secagg.inprocess import STAGES
from fedpeft.secagg.messages import KeyBroadcast, RoutedShares, UnmaskRequest
from fedpeft.secagg.params import RoundParams, resized
from fedpeft.secagg.protocol import (
    ClientState,
    client_advertise_keys,
    client_mask_input,
    client_share_keys,
    client_unmask,
)
from fedpeft.secagg.shamir import RandomBytes
from fedpeft.seeding import stream
from fedpeft.server.aggregators import SecureSum
from fedpeft.types import Params

logger = logging.getLogger(__name__)

_NO_PARAMS = RoundParams(0, 0, 0, 0, 0.0, b"", (), ())
"""Stand-in parameters of keys made before the round's are known."""

Contribution = tuple[Params, SecAggConfig]
"""A client's vector for a pass and the config of that sum (its quantizer)."""


class Captured(BaseException):
    """Raised by :class:`ReplaySum` at the pass being run: carries this
    client's vector. A ``BaseException`` so no ``except Exception`` in the
    merge code can swallow it."""

    def __init__(self, vector: Params, config: SecAggConfig) -> None:
        super().__init__("captured")
        self.vector, self.config = vector, config


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
        raise Captured(vectors[0], self.widened(clip_range, bits))


def captured_vector(
    merge: Callable[[], object], replay: ReplaySum, published: list[Params], target: int
) -> Contribution:
    """This client's vector for pass ``target`` of ``merge`` (which must run
    the server's merge code on this client's update with ``replay`` as its
    secure sum), and the config of that sum.

    Raises:
        RuntimeError: the merge finished without reaching pass ``target``.
    """
    replay.published, replay.target = published, target
    try:
        merge()
    except Captured as got:
        return got.vector, got.config
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
    (scope, round, pass), for the merge under way and the next one.
    ``vector(scope, round, pass, published)`` gives this client's input when
    the mask stage asks for it."""

    client_id: int
    seed: int
    secure: bool
    vector: Callable[[str, int, int, list[Params]], Contribution]
    states: dict[tuple[str, int, int], ClientState] = field(default_factory=dict)
    early: dict[tuple[str, int], ClientState] = field(default_factory=dict)
    """(scope, round) -> pass 0's keys made with a task, before the round's
    parameters and this client's protocol index are known."""
    merges: list[tuple[str, int]] = field(default_factory=list)
    """The merges whose states are kept: the latest two opened."""

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

    def _random(self, key: tuple[str, int, int], stage: str) -> RandomBytes:
        rng = self._stream(key, stage)
        return os.urandom if rng is None else rng.bytes

    def _coin(self, key: tuple[str, int, int]) -> np.random.Generator:
        """The stochastic-rounding generator of pass ``key``'s mask stage."""
        rng = self._stream(key, "mask")
        return np.random.default_rng() if rng is None else rng

    def _open(self, merge: tuple[str, int]) -> None:
        """Keep ``merge``'s states; those of merges before the last two go."""
        if merge[0] not in SCOPES:
            raise ValueError(f"unknown secure-sum scope {merge[0]!r}")
        if merge in self.merges:
            return
        self.merges.append(merge)
        gone, self.merges = self.merges[:-2], self.merges[-2:]
        for key in [k for k in self.states if k[:2] in gone]:
            del self.states[key]
        for merge_key in [k for k in self.early if k in gone]:
            del self.early[merge_key]

    def advertise_early(self, scope: str, rnd: int) -> list[str]:
        """Pass 0's public keys of the merge of ``(scope, rnd)`` (hex), made
        now, with a task (module docstring)."""
        self._open((scope, rnd))
        state, advert = client_advertise_keys(
            ClientState(_NO_PARAMS, 0), self._random((scope, rnd, 0), "advertise")
        )
        self.early[(scope, rnd)] = state
        return [advert.enc_public.hex(), advert.mask_public.hex()]

    def _with_params(self, key: tuple[str, int, int], h: Mapping[str, Any]) -> None:
        """Pass 0's early keys, now with the round's parameters and index."""
        made = self.early.pop(key[:2], None)
        if made is None:
            raise ValueError(f"secure-sum stage share for {key} without keys")
        params = params_from_header(h["params"])
        self.states[key] = replace(made, params=params, client_id=int(h["index"]))

    def share_ahead(self, h: Mapping[str, Any], inbound: bytes) -> bytes:
        """The next merge's shares (its pass 0), made with the unmask request
        of the merge before; ``h`` names it and gives its parameters."""
        key = (str(h["scope"]), int(h["round"]), 0)
        self._with_params(key, h)
        state, out = client_share_keys(
            self.states[key], KeyBroadcast.decode(inbound), self._random(key, "share")
        )
        self.states[key] = state
        return out.encode()

    def mask_ahead(
        self, scope: str, rnd: int, session: str, inbound: bytes
    ) -> tuple[bytes, list[float]]:
        """This client's masked input of pass 0 of ``(scope, rnd)``, made when
        its update is ready, on the shares that came with the task; and the
        quantizer it was made for (the server checks it against its own)."""
        key = (scope, rnd, 0)
        state = self.states.get(key)
        if state is None or state.params.session.hex() != session:
            raise ValueError(
                f"no shares of secure-sum session {session} went ahead here"
            )
        x, config = self.vector(scope, rnd, 0, [])
        flat = flatten(x)
        params = resized(state.params, config, flat.size)
        state, out = client_mask_input(
            replace(state, params=params),
            RoutedShares.decode(inbound),
            flat,
            self._coin(key),
        )
        self.states[key] = state
        return out.encode(), quantizer(params)

    def handle(self, env: Envelope) -> Envelope:
        """Run one stage; the reply carries this client's outbound blob (and,
        on an unmask request that brings the next merge's keys, its shares
        for that merge)."""
        h = env.header
        key = (str(h["scope"]), int(h["round"]), int(h["pass"]))
        stage = h["stage"]
        inbound = env.arrays["blob"].tobytes()
        if stage not in STAGES:
            raise ValueError(f"unknown secure-sum stage {stage!r} of {key[0]!r}")
        self._open(key[:2])
        random_bytes = self._random(key, stage)
        out: Any
        if stage == "share" and h.get("early") and key[2] == 0:
            self._with_params(key, h)
        if stage == "advertise":
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
                x, _ = self.vector(*key, published_sums(env.arrays))
                flat = flatten(x)
                if flat.size != state.params.length:
                    raise ValueError(
                        f"this client's secure-sum input has {flat.size} values; "
                        f"the round expects {state.params.length}"
                    )
                state, out = client_mask_input(
                    state, RoutedShares.decode(inbound), flat, self._coin(key)
                )
            else:
                state, out = client_unmask(state, UnmaskRequest.decode(inbound))
        self.states[key] = state
        arrays = {"blob": blob(out.encode())}
        if stage == "unmask" and NEXT in h and SETUP in env.arrays:
            try:
                arrays[SETUP] = blob(
                    self.share_ahead(h[NEXT], env.arrays[SETUP].tobytes())
                )
            except (SecAggError, ValueError, KeyError, TypeError) as err:
                logger.warning(
                    "client %d: no shares ahead for %s (%s); that merge runs every "
                    "stage",
                    self.client_id,
                    h[NEXT],
                    err,
                )
        return Envelope("reply", {"stage": stage}, arrays)
