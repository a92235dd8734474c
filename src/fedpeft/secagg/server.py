"""Server side of secure aggregation: a frozen state and one function per stage.

Bonawitz et al. 2017, Figure 4 (server half) with SecAgg+ neighbourhoods (Bell
et al. 2020). The server functions take only public messages -- public keys,
opaque ciphertexts, masked vectors and Shamir shares -- so by their signatures
they cannot touch a client's input or private keys.

Client sets (the paper's U1 ⊇ U2 ⊇ U3 ⊇ U4): U1 advertised keys, U2 sent
shares, U3 sent masked inputs (their inputs are in the sum), U4 answered the
unmask request. At every stage the server aborts with
:class:`InsufficientSurvivorsError`, returning nothing, if a client still in the
round has fewer than t_u neighbours still in it, or if a secret it must rebuild
has fewer than t shares.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedpeft.secagg import prg, shamir
from fedpeft.secagg.errors import InsufficientSurvivorsError, ProtocolError
from fedpeft.secagg.messages import (
    AdvertiseKeys,
    KeyBroadcast,
    MaskedInput,
    RoutedShares,
    SharePackage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedpeft.secagg.params import RoundParams
from fedpeft.secagg.quantize import (
    UInt64Array,
    dequantize_sum,
    sum_error_bound,
)
from fedpeft.types import Float64Array

_SHOWN = 5  # clients named in an error message


@dataclass(frozen=True)
class ServerState:
    """What the server holds between stages (all of it public or masked).

    Attributes:
        params: The round's public parameters.
        stage: The next stage the server runs (0-3; 4 = finished).
        public_keys: U1's (c^PK, s^PK).
        shared: U2.
        masked: U3.
        masked_sum: Σ_{u ∈ U3} y_u mod 2^b (uint64), once stage 2 ran.
    """

    params: RoundParams
    stage: int = 0
    public_keys: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)
    shared: frozenset[int] = frozenset()
    masked: frozenset[int] = frozenset()
    masked_sum: UInt64Array | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The only output of a round: the survivors' sum and who survived.

    Attributes:
        total: Σ_{u ∈ U3} level_u, exact (uint64, length D).
        values: The dequantized sum Σ_{u ∈ U3} x_u (float64, length D).
        survivors: U3, the clients whose inputs are in the sum.
        dropped: All other invited clients.
        error_bound: Per-coordinate bound |values − Σ clip(x_u)| < N·Δ.
    """

    total: UInt64Array
    values: Float64Array
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    error_bound: float


def collect_keys(
    state: ServerState, adverts: Sequence[AdvertiseKeys]
) -> tuple[ServerState, dict[int, KeyBroadcast]]:
    """Stage 0: record U1 and send each client its live neighbours' keys.

    Raises:
        ProtocolError: unknown or repeated sender, or a malformed key.
        InsufficientSurvivorsError: a client in U1 has < t_u neighbours in U1.
    """
    _expect(state, 0)
    _check_senders([a.client_id for a in adverts], range(state.params.num_clients))
    for a in adverts:
        if len(a.enc_public) != prg.KEY_BYTES or len(a.mask_public) != prg.KEY_BYTES:
            raise ProtocolError(f"client {a.client_id} sent a malformed public key")
    keys = {a.client_id: (a.enc_public, a.mask_public) for a in adverts}
    u1 = frozenset(keys)
    _check_neighbourhoods(state.params, u1, u1, "advertised keys")
    broadcasts = {
        u: KeyBroadcast(u, {v: keys[v] for v in sorted(state.params.graph[u] & u1)})
        for u in sorted(u1)
    }
    return replace(state, stage=1, public_keys=keys), broadcasts


def route_shares(
    state: ServerState, packages: Sequence[SharePackage]
) -> tuple[ServerState, dict[int, RoutedShares]]:
    """Stage 1: record U2 and forward each ciphertext, unopened, to its recipient.

    Raises:
        ProtocolError: a sender outside U1, repeated, or a package whose
            recipients are not exactly its live neighbours.
        InsufficientSurvivorsError: a client in U2 has < t_u neighbours in U2.
    """
    _expect(state, 1)
    u1 = frozenset(state.public_keys)
    _check_senders([p.sender for p in packages], u1)
    for pkg in packages:
        expected = state.params.graph[pkg.sender] & u1
        if set(pkg.ciphertexts) != expected:
            raise ProtocolError(
                f"client {pkg.sender} sent shares to {sorted(pkg.ciphertexts)}, "
                f"expected its live neighbours {sorted(expected)}"
            )
    u2 = frozenset(p.sender for p in packages)
    _check_neighbourhoods(state.params, u2, u2, "shared keys")
    inbox: dict[int, dict[int, bytes]] = {v: {} for v in sorted(u2)}
    for pkg in sorted(packages, key=lambda p: p.sender):  # O(N·k), not O(N²)
        for v, ciphertext in pkg.ciphertexts.items():
            if v in inbox:
                inbox[v][pkg.sender] = ciphertext
    routed = {v: RoutedShares(v, table) for v, table in inbox.items()}
    return replace(state, stage=2, shared=u2), routed


def collect_masked(
    state: ServerState, inputs: Sequence[MaskedInput]
) -> tuple[ServerState, dict[int, UnmaskRequest]]:
    """Stage 2: add up the masked inputs of U3 and ask U3 for shares.

    Each u ∈ U3 is asked for b_v shares of its neighbours in U3 and s_v^SK
    shares of its neighbours in U2 \\ U3.

    Raises:
        ProtocolError: a sender outside U2, repeated, or a malformed vector.
        InsufficientSurvivorsError: some secret that will be needed has fewer
            than t holders in U3, or U3 is empty.
    """
    _expect(state, 2)
    p = state.params
    _check_senders([m.client_id for m in inputs], state.shared)
    u3 = frozenset(m.client_id for m in inputs)
    if not u3:
        raise InsufficientSurvivorsError("no client sent a masked input")
    _check_neighbourhoods(p, _needed(p, state.shared, u3), u3, "masked inputs")
    total = np.zeros(p.length, dtype=np.uint64)
    for m in inputs:
        total += _masked_vector(p, m)
    total &= np.uint64((1 << p.bits) - 1)
    dropped = state.shared - u3
    requests = {
        u: UnmaskRequest(u, p.graph[u] & u3, p.graph[u] & dropped) for u in sorted(u3)
    }
    return replace(state, stage=3, masked=u3, masked_sum=total), requests


def unmask(
    state: ServerState, responses: Sequence[UnmaskResponse]
) -> tuple[ServerState, SecAggResult]:
    """Stage 3: rebuild b_u (u ∈ U3) and s_v^SK (v ∈ U2 \\ U3), strip the masks.

    Σ_{u∈U3} x_u = Σ_{u∈U3} y_u − Σ_{u∈U3} PRG(b_u)
                   − Σ_{v∈U2\\U3} Σ_{u∈U3∩N(v)} ±PRG(s_uv)   (mod 2^b),
    then dequantize with N = |U3|.

    Raises:
        ProtocolError: a sender outside U3 or repeated, a response that does
            not answer exactly its request, or shares that rebuild a key not
            matching the advertised public key.
        InsufficientSurvivorsError: fewer than t shares of some needed secret;
            nothing is returned.
    """
    _expect(state, 3)
    p = state.params
    _check_senders([r.sender for r in responses], state.masked)
    dropped = state.shared - state.masked
    for r in responses:
        _check_response(p, r, state.masked, dropped)
    b_shares = _gather(responses, self_mask=True)
    s_shares = _gather(responses, self_mask=False)
    _check_share_counts(p, b_shares, s_shares, state.masked, dropped)
    total = state.masked_sum
    if total is None:  # unreachable after stage 2; keeps the type checker honest
        raise ProtocolError("no masked inputs were collected")
    total = total - _self_masks(p, b_shares)
    total = total - _dropped_pair_masks(state, s_shares)
    total &= np.uint64((1 << p.bits) - 1)
    n = len(state.masked)
    result = SecAggResult(
        total=total,
        values=dequantize_sum(total, n, p.clip_range, p.value_bits, p.bits),
        survivors=tuple(sorted(state.masked)),
        dropped=tuple(sorted(set(range(p.num_clients)) - state.masked)),
        error_bound=sum_error_bound(n, p.clip_range, p.value_bits),
    )
    return replace(state, stage=4), result


def _self_masks(
    p: RoundParams, b_shares: Mapping[int, dict[int, bytes]]
) -> UInt64Array:
    total = np.zeros(p.length, dtype=np.uint64)
    for u, shares in sorted(b_shares.items()):
        seed = _reconstruct(shares, p.thresholds[u], f"b_{u}")
        total += prg.expand_mask(seed, p.length, p.bits)
    return total


def _dropped_pair_masks(
    state: ServerState, s_shares: Mapping[int, dict[int, bytes]]
) -> UInt64Array:
    """Σ over dropped v and surviving neighbours u of the sign-weighted PRG(s_uv)
    that u added: +PRG when v < u, −PRG when v > u."""
    p = state.params
    total = np.zeros(p.length, dtype=np.uint64)
    for v, shares in sorted(s_shares.items()):
        mask_private = _reconstruct(shares, p.thresholds[v], f"s_{v}^SK")
        if prg.public_key(mask_private) != state.public_keys[v][1]:
            raise ProtocolError(f"shares of s_{v}^SK rebuild the wrong key")
        survivors = sorted(p.graph[v] & state.masked)
        public = {u: state.public_keys[u][1] for u in survivors}
        seeds = prg.agree(mask_private, public, b"mask", p.session, v)
        for u in survivors:
            mask = prg.expand_mask(seeds[u], p.length, p.bits)
            if v < u:
                total += mask
            else:
                total -= mask
    return total


def _needed(
    p: RoundParams, shared: frozenset[int], u3: frozenset[int]
) -> frozenset[int]:
    """Clients whose secret the server will rebuild: U3, plus the clients of
    U2 \\ U3 that have a neighbour in U3 (their pairwise masks are in the sum)."""
    return u3 | frozenset(v for v in shared - u3 if p.graph[v] & u3)


def _gather(
    responses: Sequence[UnmaskResponse], self_mask: bool
) -> dict[int, dict[int, bytes]]:
    """owner -> {holder: share} over all responses."""
    out: dict[int, dict[int, bytes]] = {}
    for r in responses:
        table = r.self_mask_shares if self_mask else r.mask_key_shares
        for owner, share in table.items():
            out.setdefault(owner, {})[r.sender] = share
    return out


def _check_share_counts(
    p: RoundParams,
    b_shares: Mapping[int, Mapping[int, bytes]],
    s_shares: Mapping[int, Mapping[int, bytes]],
    u3: frozenset[int],
    dropped: frozenset[int],
) -> None:
    owners = [(u, len(b_shares.get(u, {})), "b") for u in sorted(u3)]
    owners += [
        (v, len(s_shares.get(v, {})), "s^SK")
        for v in sorted(dropped)
        if p.graph[v] & u3
    ]
    short = [(u, n, what) for u, n, what in owners if n < p.thresholds[u]]
    if short:
        shown = ", ".join(
            f"{what} of client {u}: {n} < t={p.thresholds[u]}"
            for u, n, what in short[:_SHOWN]
        )
        raise InsufficientSurvivorsError(
            f"too few unmasking shares for {len(short)} secrets ({shown}); "
            "the round is aborted and no sum is released"
        )


def _check_response(
    p: RoundParams, r: UnmaskResponse, u3: frozenset[int], dropped: frozenset[int]
) -> None:
    neighbours = p.graph[r.sender]
    if set(r.self_mask_shares) != neighbours & u3 or set(r.mask_key_shares) != (
        neighbours & dropped
    ):
        raise ProtocolError(
            f"client {r.sender}'s unmask response does not match its request"
        )


def _reconstruct(shares: Mapping[int, bytes], t: int, what: str) -> bytes:
    try:
        return shamir.reconstruct(shares, t)
    except ValueError as err:
        raise ProtocolError(f"cannot rebuild {what}: {err}") from None


def _masked_vector(p: RoundParams, m: MaskedInput) -> UInt64Array:
    if m.bits != p.bits or m.length != p.length:
        raise ProtocolError(
            f"client {m.client_id} sent a masked input of {m.length} values of "
            f"{m.bits} bits, expected {p.length} of {p.bits}"
        )
    y = m.vector()
    if y.size and int(y.max()) >> p.bits:
        raise ProtocolError(f"client {m.client_id} sent values >= 2^{p.bits}")
    return y


def _check_senders(ids: Sequence[int], allowed: Container[int]) -> None:
    if len(set(ids)) != len(ids):
        raise ProtocolError(f"repeated senders in {sorted(ids)}")
    bad = [i for i in ids if i not in allowed]
    if bad:
        raise ProtocolError(f"messages from clients {bad} not expected at this stage")


def _check_neighbourhoods(
    p: RoundParams, clients: frozenset[int], alive: frozenset[int], what: str
) -> None:
    """Raise unless every client in ``clients`` has >= t_u neighbours in ``alive``."""
    short = [
        (u, len(p.graph[u] & alive))
        for u in sorted(clients)
        if len(p.graph[u] & alive) < p.thresholds[u]
    ]
    if short:
        shown = ", ".join(
            f"client {u}: {n} < t={p.thresholds[u]}" for u, n in short[:_SHOWN]
        )
        raise InsufficientSurvivorsError(
            f"too few neighbours with {what} for {len(short)} clients ({shown}); "
            "the round is aborted and no sum is released"
        )


def _expect(state: ServerState, stage: int) -> None:
    if state.stage != stage:
        raise ProtocolError(f"server is at stage {state.stage}, not {stage}")
