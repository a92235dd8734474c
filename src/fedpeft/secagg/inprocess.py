"""Run a whole SecAgg round in one process: what the embedded engine calls.

Every message really is encoded by its sender and decoded by its receiver, so
the byte counts are ``len()`` of the serialized keys, ciphertexts, masked vectors
and shares, and the timings include the (de)serialization each side does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.mean import check_updates, flatten, unflatten
from fedpeft.secagg.client import ClientState
from fedpeft.secagg.config import SecAggConfig
from fedpeft.secagg.messages import (
    AdvertiseKeys,
    KeyBroadcast,
    MaskedInput,
    RoutedShares,
    SharePackage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedpeft.secagg.protocol import (
    client_advertise_keys,
    client_mask_input,
    client_share_keys,
    client_unmask,
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
    setup,
)
from fedpeft.secagg.server import SecAggResult, ServerState
from fedpeft.secagg.shamir import RandomBytes
from fedpeft.types import Params, ParamsLike

STAGES = ("advertise", "share", "mask", "unmask")


class _Msg(Protocol):
    def encode(self) -> bytes: ...


M = TypeVar("M")
Out = TypeVar("Out", bound=_Msg)


@dataclass(frozen=True)
class SecAggStats:
    """Cost of one round, measured.

    Attributes:
        num_clients: N invited.
        survivors: Clients whose inputs are in the sum (U3).
        sent: stage name -> bytes each client sent in that stage (0 if none).
        received: stage name -> bytes each client received to run that stage
            (the server's answer to the previous stage; 0 for "advertise").
        client_seconds: Compute time of each client, all stages, incl. its
            quantization, crypto and (de)serialization.
        server_seconds: Server compute time, all stages (incl. setup).
        error_bound: Per-coordinate bound on |secure sum − plain sum| for
            inputs inside [-r, r] (N·Δ with N = len(survivors)).
        value_bits: q used for quantization.
        mean_degree: Mean neighbourhood size |N(u)|.
    """

    num_clients: int
    survivors: tuple[int, ...]
    sent: Mapping[str, tuple[int, ...]]
    received: Mapping[str, tuple[int, ...]]
    client_seconds: tuple[float, ...]
    server_seconds: float
    error_bound: float
    value_bits: int
    mean_degree: float

    def sent_total(self) -> tuple[int, ...]:
        """Bytes each client sent over all stages."""
        return tuple(sum(col) for col in zip(*self.sent.values(), strict=True))

    def received_total(self) -> tuple[int, ...]:
        """Bytes each client received over all stages."""
        return tuple(sum(col) for col in zip(*self.received.values(), strict=True))


def secure_sum(
    updates: Sequence[ParamsLike],
    config: SecAggConfig,
    *,
    dropped_after_advertise: Collection[int] = (),
    dropped_after_share: Collection[int] = (),
    dropped_after_mask: Collection[int] = (),
    rng: np.random.Generator | None = None,
) -> tuple[Params, SecAggStats]:
    """Securely sum ``updates`` (Bonawitz et al. 2017 / SecAgg+), in process.

    Client u's update is clipped to [-r, r] per coordinate, quantized, masked
    and summed; the server only ever decodes public keys, ciphertexts, masked
    vectors and shares.

    Args:
        updates: N updates with identical keys and shapes (client u = index u).
        config: Protocol parameters; ``config.secure`` picks the randomness.
        dropped_after_advertise: Clients that vanish after stage 0.
        dropped_after_share: Clients that vanish after stage 1 (their inputs
            are NOT in the sum; their pairwise masks are removed via s^SK).
        dropped_after_mask: Clients that send y_u and vanish before stage 3
            (their inputs ARE in the sum; b_u is rebuilt from shares).
        rng: Required when ``config.secure`` is False and refused otherwise:
            the seed of every key, mask seed and rounding coin (INSECURE,
            reproducible; for tests and benchmarks).

    Returns:
        The sum of the surviving clients' (clipped) updates, within
        ``stats.error_bound`` per coordinate plus the float32 rounding of the
        result, and the round's statistics (``len(stats.survivors)`` is the
        count to divide by for a mean).

    Raises:
        ValueError: bad updates, dropout sets or rng/secure combination, or a
            configuration that does not fit N (overflow, threshold).
        InsufficientSurvivorsError: too few clients left; nothing is returned.
    """
    check_updates(updates)
    vectors = [flatten(u) for u in updates]
    n = len(updates)
    drops = _check_dropouts(
        n, dropped_after_advertise, dropped_after_share, dropped_after_mask
    )
    server_bytes, client_bytes, rounding = _randomness(config, n, rng)
    ledger = _Ledger(n)
    start = time.perf_counter()
    clients, server = setup(config, n, vectors[0].size, server_bytes)
    ledger.server_seconds += time.perf_counter() - start
    result = _run_stages(
        ledger, clients, server, vectors, drops, client_bytes, rounding
    )
    total = unflatten(result.values, like=updates[0])
    return total, ledger.stats(result, server.params.value_bits, server.params.graph)


def _run_stages(
    ledger: _Ledger,
    clients: list[ClientState],
    server: ServerState,
    vectors: list[npt.NDArray[np.float64]],
    drops: tuple[frozenset[int], frozenset[int], frozenset[int]],
    client_bytes: list[RandomBytes],
    rounding: list[np.random.Generator],
) -> SecAggResult:
    """Stages 0-3; each client turn decodes its inbound blob and encodes its reply."""

    def advertise(s: ClientState, _: bytes, u: int) -> tuple[ClientState, _Msg]:
        return client_advertise_keys(s, client_bytes[u])

    def share(s: ClientState, b: bytes, u: int) -> tuple[ClientState, _Msg]:
        return client_share_keys(s, KeyBroadcast.decode(b), client_bytes[u])

    def mask(s: ClientState, b: bytes, u: int) -> tuple[ClientState, _Msg]:
        return client_mask_input(s, RoutedShares.decode(b), vectors[u], rounding[u])

    def unmask(s: ClientState, b: bytes, u: int) -> tuple[ClientState, _Msg]:
        return client_unmask(s, UnmaskRequest.decode(b))

    alive = frozenset(range(len(clients)))
    up = ledger.clients(clients, alive, "advertise", {}, advertise)
    server, down = ledger.server(server, server_collect_keys, AdvertiseKeys.decode, up)
    alive -= drops[0]
    up = ledger.clients(clients, alive, "share", down, share)
    server, down = ledger.server(server, server_route_shares, SharePackage.decode, up)
    alive -= drops[1]
    up = ledger.clients(clients, alive, "mask", down, mask)
    server, down = ledger.server(server, server_collect_masked, MaskedInput.decode, up)
    alive -= drops[2]
    up = ledger.clients(clients, alive, "unmask", down, unmask)
    start = time.perf_counter()
    server, result = server_unmask(
        server, [UnmaskResponse.decode(b) for b in up.values()]
    )
    ledger.server_seconds += time.perf_counter() - start
    return result


class _Ledger:
    """Mutable accounting local to one :func:`secure_sum` call."""

    def __init__(self, n: int) -> None:
        self.sent = {s: [0] * n for s in STAGES}
        self.received = {s: [0] * n for s in STAGES}
        self.client_seconds = [0.0] * n
        self.server_seconds = 0.0

    def clients(
        self,
        states: list[ClientState],
        alive: frozenset[int],
        stage: str,
        inbound: Mapping[int, bytes],
        step: Callable[[ClientState, bytes, int], tuple[ClientState, _Msg]],
    ) -> dict[int, bytes]:
        """Run each live client's step on its inbound blob (updating ``states``);
        return the encoded replies. A live client with no inbound blob (it was
        left out by the server) gets b"" and its step fails loudly."""
        replies = {}
        for u in sorted(alive):
            blob_in = inbound.get(u, b"")
            start = time.perf_counter()
            states[u], message = step(states[u], blob_in, u)
            blob = message.encode()
            self.client_seconds[u] += time.perf_counter() - start
            self.sent[stage][u] += len(blob)
            self.received[stage][u] += len(blob_in)
            replies[u] = blob
        return replies

    def server(
        self,
        state: ServerState,
        step: Callable[[ServerState, list[M]], tuple[ServerState, dict[int, Out]]],
        decode: Callable[[bytes], M],
        blobs: Mapping[int, bytes],
    ) -> tuple[ServerState, dict[int, bytes]]:
        """Decode the clients' blobs, run the server step, encode its replies."""
        start = time.perf_counter()
        state, out = step(state, [decode(b) for b in blobs.values()])
        encoded = {u: m.encode() for u, m in out.items()}
        self.server_seconds += time.perf_counter() - start
        return state, encoded

    def stats(
        self, result: SecAggResult, value_bits: int, graph: Sequence[frozenset[int]]
    ) -> SecAggStats:
        return SecAggStats(
            num_clients=len(self.client_seconds),
            survivors=result.survivors,
            sent={s: tuple(v) for s, v in self.sent.items()},
            received={s: tuple(v) for s, v in self.received.items()},
            client_seconds=tuple(self.client_seconds),
            server_seconds=self.server_seconds,
            error_bound=result.error_bound,
            value_bits=value_bits,
            mean_degree=float(np.mean([len(n) for n in graph])),
        )


def _randomness(
    config: SecAggConfig, n: int, rng: np.random.Generator | None
) -> tuple[RandomBytes, list[RandomBytes], list[np.random.Generator]]:
    """(server bytes, per-client bytes, per-client rounding generators)."""
    if config.secure:
        if rng is not None:
            raise ValueError(
                "rng is only used with SecAggConfig.secure=False; secure mode "
                "draws all key material from OS entropy"
            )
        # default_rng() without a seed is seeded from OS entropy.
        return os.urandom, [os.urandom] * n, [np.random.default_rng() for _ in range(n)]
    if rng is None:
        raise ValueError(
            "SecAggConfig.secure=False needs an explicit numpy Generator as rng"
        )
    children = rng.spawn(2 * n + 1)
    return (
        children[0].bytes,
        [g.bytes for g in children[1 : n + 1]],
        children[n + 1 :],
    )


def _check_dropouts(
    n: int, *sets: Collection[int]
) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    names = ("dropped_after_advertise", "dropped_after_share", "dropped_after_mask")
    frozen = [frozenset(int(u) for u in s) for s in sets]
    for name, ids in zip(names, frozen, strict=True):
        bad = sorted(u for u in ids if not 0 <= u < n)
        if bad:
            raise ValueError(f"{name} holds ids {bad} outside [0, {n - 1}]")
    for i in range(3):
        for j in range(i + 1, 3):
            both = frozen[i] & frozen[j]
            if both:
                raise ValueError(
                    f"clients {sorted(both)} are in both {names[i]} and {names[j]}"
                )
    return frozen[0], frozen[1], frozen[2]
