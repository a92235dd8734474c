"""Client side of secure aggregation: a frozen state and one function per stage.

Bonawitz et al. 2017, Figure 4 (rounds 0-3, honest-but-curious version) with the
SecAgg+ neighbourhoods of Bell et al. 2020: a client masks with, and shares its
secrets among, its graph neighbours only. Each stage function takes the state
and the server's message and returns a NEW state plus the client's reply; it
never mutates its arguments.

    stage 0  advertise_keys   -> AdvertiseKeys   (c_u^PK, s_u^PK)
    stage 1  share_keys       -> SharePackage    (Enc(b_u and s_u^SK shares))
    stage 2  mask_input       -> MaskedInput     (y_u)
    stage 3  unmask           -> UnmaskResponse  (b_v or s_v^SK shares)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

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
from fedpeft.secagg.quantize import UInt64Array, quantize
from fedpeft.secagg.shamir import RandomBytes


@dataclass(frozen=True)
class ClientState:
    """What one client holds between stages.

    Attributes:
        params: The round's public parameters.
        client_id: u.
        stage: The next stage this client accepts (0-3; 4 = finished).
        enc_private: c_u^SK, for encrypting shares (stages 0-1).
        mask_private: s_u^SK, for pairwise masks (stages 0-2).
        self_seed: b_u, the self-mask seed (stages 1-2).
        peer_keys: Neighbours' (c^PK, s^PK) from the server's broadcast.
        held_shares: sender v -> (share of b_v, share of s_v^SK), decrypted in
            stage 2 and revealed one of the two per v in stage 3.
    """

    params: RoundParams
    client_id: int
    stage: int = 0
    enc_private: bytes = field(default=b"", repr=False)
    mask_private: bytes = field(default=b"", repr=False)
    self_seed: bytes = field(default=b"", repr=False)
    peer_keys: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)
    held_shares: Mapping[int, tuple[bytes, bytes]] = field(
        default_factory=dict, repr=False
    )

    @property
    def neighbours(self) -> frozenset[int]:
        """N(u) in the round's graph."""
        return self.params.graph[self.client_id]

    @property
    def threshold(self) -> int:
        """t_u, the number of shares needed to rebuild this client's secrets."""
        return self.params.thresholds[self.client_id]


def advertise_keys(
    state: ClientState, random_bytes: RandomBytes
) -> tuple[ClientState, AdvertiseKeys]:
    """Stage 0 (AdvertiseKeys): make two X25519 key pairs, publish the keys.

    Raises:
        ProtocolError: if the client is not at stage 0.
    """
    _expect(state, 0)
    enc_private = prg.random_secret(random_bytes)
    mask_private = prg.random_secret(random_bytes)
    message = AdvertiseKeys(
        state.client_id, prg.public_key(enc_private), prg.public_key(mask_private)
    )
    new = replace(state, stage=1, enc_private=enc_private, mask_private=mask_private)
    return new, message


def share_keys(
    state: ClientState, broadcast: KeyBroadcast, random_bytes: RandomBytes
) -> tuple[ClientState, SharePackage]:
    """Stage 1 (ShareKeys): draw b_u, Shamir-share b_u and s_u^SK t_u-of-|N(u)|
    among the live neighbours, encrypt each neighbour's pair of shares.

    Raises:
        ProtocolError: wrong stage or recipient, keys of non-neighbours or
            repeated public keys.
        InsufficientSurvivorsError: fewer than t_u live neighbours.
    """
    _expect(state, 1)
    _check_recipient(state, broadcast.recipient)
    keys = dict(broadcast.keys)
    _check_peer_keys(state, keys)
    _check_enough(state, len(keys), "advertised keys")
    self_seed = prg.random_secret(random_bytes)  # b_u
    holders = sorted(keys)
    b_shares = shamir.share(self_seed, state.threshold, holders, random_bytes)
    s_shares = shamir.share(state.mask_private, state.threshold, holders, random_bytes)
    enc_keys = _enc_keys(state, {v: keys[v][0] for v in holders})
    ciphertexts = {
        v: prg.encrypt(
            enc_keys[v],
            b_shares[v] + s_shares[v],
            _associated_data(state.params, state.client_id, v),
            random_bytes,
        )
        for v in holders
    }
    new = replace(state, stage=2, self_seed=self_seed, peer_keys=MappingProxyType(keys))
    return new, SharePackage(state.client_id, ciphertexts)


def mask_input(
    state: ClientState,
    routed: RoutedShares,
    update: npt.ArrayLike,
    rng: np.random.Generator,
) -> tuple[ClientState, MaskedInput]:
    """Stage 2 (MaskedInputCollection): quantize x_u and add the masks.

    y_u = q(x_u) + PRG(b_u) + Σ_{v ∈ U2∩N(u), v<u} PRG(s_uv)
          − Σ_{v ∈ U2∩N(u), v>u} PRG(s_uv)   (mod 2^b),
    where U2 ∩ N(u) are the neighbours whose share ciphertexts arrived.

    Args:
        state: The client after stage 1.
        routed: Ciphertexts addressed to this client.
        update: x_u, D real values (the flattened update).
        rng: Generator for the stochastic rounding.

    Raises:
        ProtocolError: wrong stage or recipient, a ciphertext from a
            non-neighbour, or one failing authentication.
        InsufficientSurvivorsError: fewer than t_u neighbours sent shares.
        ValueError: if ``update`` is not D finite values.
    """
    _expect(state, 2)
    _check_recipient(state, routed.recipient)
    x = np.asarray(update, dtype=np.float64)
    if x.shape != (state.params.length,):
        raise ValueError(
            f"update must be a 1-D vector of {state.params.length} values, "
            f"got shape {x.shape}"
        )
    held = _decrypt_all(state, routed.ciphertexts)
    _check_enough(state, len(held), "share bundles")
    p = state.params
    y = quantize(x, p.clip_range, p.value_bits, rng)
    y += prg.expand_mask(state.self_seed, p.length, p.bits)
    y += _pairwise_masks(state, sorted(held))
    y &= np.uint64((1 << p.bits) - 1)
    new = replace(
        state,
        stage=3,
        enc_private=b"",
        mask_private=b"",
        self_seed=b"",
        held_shares=MappingProxyType(held),
    )
    return new, MaskedInput.pack(state.client_id, p.bits, y)


def unmask(
    state: ClientState, request: UnmaskRequest
) -> tuple[ClientState, UnmaskResponse]:
    """Stage 3 (Unmasking): reveal b_v shares of surviving neighbours and
    s_v^SK shares of dropped ones, never both for the same v.

    Raises:
        ProtocolError: wrong stage or recipient, a client listed as both
            survivor and dropped, or a client this one holds no shares of.
    """
    _expect(state, 3)
    _check_recipient(state, request.recipient)
    both = request.survivors & request.dropped
    if both:
        raise ProtocolError(
            f"client {state.client_id} refuses to unmask: clients {sorted(both)} "
            "are listed as survived AND dropped (revealing both secrets would "
            "expose their inputs)"
        )
    unknown = (request.survivors | request.dropped) - set(state.held_shares)
    if unknown:
        raise ProtocolError(
            f"client {state.client_id} holds no shares of clients {sorted(unknown)}"
        )
    response = UnmaskResponse(
        state.client_id,
        {v: state.held_shares[v][0] for v in sorted(request.survivors)},
        {v: state.held_shares[v][1] for v in sorted(request.dropped)},
    )
    return replace(state, stage=4, held_shares=MappingProxyType({})), response


def _pairwise_masks(state: ClientState, peers: list[int]) -> UInt64Array:
    """Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv), wrapping mod 2^64."""
    p = state.params
    public = {v: state.peer_keys[v][1] for v in peers}
    seeds = prg.agree(state.mask_private, public, b"mask", p.session, state.client_id)
    total = np.zeros(p.length, dtype=np.uint64)
    for v in peers:
        mask = prg.expand_mask(seeds[v], p.length, p.bits)
        if v < state.client_id:
            total += mask
        else:
            total -= mask
    return total


def _decrypt_all(
    state: ClientState, ciphertexts: Mapping[int, bytes]
) -> dict[int, tuple[bytes, bytes]]:
    stranger = set(ciphertexts) - set(state.peer_keys)
    if stranger:
        raise ProtocolError(
            f"client {state.client_id} got shares from non-neighbours "
            f"{sorted(stranger)}"
        )
    keys = _enc_keys(state, {v: state.peer_keys[v][0] for v in ciphertexts})
    held = {}
    for v in sorted(ciphertexts):
        ad = _associated_data(state.params, v, state.client_id)
        try:
            plain = prg.decrypt(keys[v], ciphertexts[v], ad)
        except ValueError as err:
            raise ProtocolError(f"shares from client {v}: {err}") from None
        if len(plain) != 2 * shamir.SHARE_BYTES:
            raise ProtocolError(f"shares from client {v} have the wrong size")
        held[v] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
    return held


def _enc_keys(state: ClientState, enc_public: Mapping[int, bytes]) -> dict[int, bytes]:
    """Symmetric ChaCha20-Poly1305 keys shared with each peer (from c^SK, c^PK)."""
    return prg.agree(
        state.enc_private, enc_public, b"enc", state.params.session, state.client_id
    )


def _associated_data(params: RoundParams, sender: int, recipient: int) -> bytes:
    """Binds a ciphertext to the round and the direction sender -> recipient."""
    return params.session + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")


def _expect(state: ClientState, stage: int) -> None:
    if state.stage != stage:
        raise ProtocolError(
            f"client {state.client_id} is at stage {state.stage}, "
            f"got a stage-{stage} request"
        )


def _check_recipient(state: ClientState, recipient: int) -> None:
    if recipient != state.client_id:
        raise ProtocolError(
            f"message for client {recipient} delivered to client {state.client_id}"
        )


def _check_peer_keys(state: ClientState, keys: dict[int, tuple[bytes, bytes]]) -> None:
    stranger = set(keys) - state.neighbours
    if stranger:
        raise ProtocolError(
            f"client {state.client_id} got keys of non-neighbours {sorted(stranger)}"
        )
    flat = [k for pair in keys.values() for k in pair]
    if len(set(flat)) != len(flat):
        raise ProtocolError(f"client {state.client_id} got repeated public keys")


def _check_enough(state: ClientState, count: int, what: str) -> None:
    if count < state.threshold:
        raise InsufficientSurvivorsError(
            f"client {state.client_id} has {what} from only {count} neighbours, "
            f"fewer than t={state.threshold}; the round is aborted"
        )
