"""Stage functions driven by hand: masks look uniform, ordering and routing are
enforced, the server sees only public messages."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence

import numpy as np
import pytest

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
    ClientState,
    ProtocolError,
    SecAggConfig,
    ServerState,
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
from fedpeft.secagg.quantize import quantize


def _through_stage_2(
    n: int, inputs: np.ndarray, config: SecAggConfig, seed: int
) -> tuple[list[ClientState], ServerState, list[MaskedInput]]:
    rngs = np.random.default_rng(seed).spawn(n + 1)
    clients, srv = setup(config, n, inputs.shape[1], rngs[n].bytes)
    adverts = []
    for u in range(n):
        clients[u], msg = client_advertise_keys(clients[u], rngs[u].bytes)
        adverts.append(msg)
    srv, broadcasts = server_collect_keys(srv, adverts)
    packages = []
    for u in range(n):
        clients[u], pkg = client_share_keys(clients[u], broadcasts[u], rngs[u].bytes)
        packages.append(pkg)
    srv, routed = server_route_shares(srv, packages)
    masked = []
    for u in range(n):
        clients[u], y = client_mask_input(clients[u], routed[u], inputs[u], rngs[u])
        masked.append(y)
    return clients, srv, masked


def _chi_square_uniform(values: np.ndarray, bins: int) -> tuple[float, float]:
    """Chi-square statistic against the uniform law, and the critical value at
    significance 1e-6 (Wilson-Hilferty approximation, df = bins − 1)."""
    counts = np.bincount(values, minlength=bins)
    expected = values.size / bins
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = bins - 1
    z = 4.753  # one-sided standard normal quantile for 1e-6
    critical = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
    return stat, critical


@pytest.mark.parametrize("bits", [32, 20])
def test_a_masked_vector_looks_uniform(bits: int) -> None:
    length = 1 << 15
    inputs = np.zeros((3, length))  # the most structured input there is
    config = SecAggConfig(bits=bits, secure=False)
    _, _, masked = _through_stage_2(3, inputs, config, seed=11)
    y = masked[0].vector()
    assert int(y.max()) < 2**bits
    low_bytes = (y & np.uint64(0xFF)).astype(np.int64)
    high_bytes = (y >> np.uint64(bits - 8)).astype(np.int64)
    for values in (low_bytes, high_bytes):
        stat, critical = _chi_square_uniform(values, 256)
        assert stat < critical
    stat, critical = _chi_square_uniform(
        np.frombuffer(masked[0].payload, np.uint8).astype(np.int64), 256
    )
    if bits == 32:  # every payload byte is a full mask byte
        assert stat < critical
    # control: the unmasked quantized input fails the same test by far
    q = quantize(inputs[0] + 0.3, 1.0, 24, np.random.default_rng(0))
    stat, critical = _chi_square_uniform((q & np.uint64(0xFF)).astype(np.int64), 256)
    assert stat > 10 * critical


def test_masked_vectors_of_the_same_input_differ() -> None:
    inputs = np.full((3, 4096), 0.25)
    _, _, masked = _through_stage_2(3, inputs, SecAggConfig(secure=False), seed=12)
    a, b = masked[0].vector(), masked[1].vector()
    assert np.mean(a == b) < 0.01


def test_stage_functions_sum_to_the_plain_sum() -> None:
    rng = np.random.default_rng(13)
    inputs = rng.uniform(-1, 1, size=(4, 50))
    clients, srv, masked = _through_stage_2(4, inputs, SecAggConfig(secure=False), 13)
    srv, requests = server_collect_masked(srv, masked)
    responses = []
    for u in range(4):
        clients[u], r = client_unmask(clients[u], requests[u])
        responses.append(r)
    srv, result = server_unmask(srv, responses)
    assert srv.stage == 4
    assert np.all(np.abs(result.values - inputs.sum(axis=0)) <= result.error_bound)


def test_client_refuses_to_reveal_both_secrets_of_one_client() -> None:
    inputs = np.zeros((4, 8))
    clients, srv, masked = _through_stage_2(4, inputs, SecAggConfig(secure=False), 14)
    srv, requests = server_collect_masked(srv, masked)
    greedy = UnmaskRequest(0, frozenset({1, 2, 3}), frozenset({1}))
    with pytest.raises(ProtocolError, match="survived AND dropped"):
        client_unmask(clients[0], greedy)
    clients[0], _ = client_unmask(clients[0], requests[0])
    with pytest.raises(ProtocolError, match="stage 4"):
        client_unmask(clients[0], requests[0])  # answers once only


def test_stages_out_of_order_and_misrouted_messages_fail() -> None:
    clients, srv = setup(
        SecAggConfig(secure=False), 3, 4, np.random.default_rng(0).bytes
    )
    with pytest.raises(ProtocolError, match="stage 0"):
        client_share_keys(
            clients[0], KeyBroadcast(0, {}), np.random.default_rng(0).bytes
        )
    with pytest.raises(ProtocolError, match="server is at stage 0"):
        server_route_shares(srv, [])
    rb = np.random.default_rng(1).bytes
    adverts = []
    for u in range(3):
        clients[u], msg = client_advertise_keys(clients[u], rb)
        adverts.append(msg)
    srv, broadcasts = server_collect_keys(srv, adverts)
    with pytest.raises(ProtocolError, match="delivered to client 0"):
        client_share_keys(clients[0], broadcasts[1], rb)
    with pytest.raises(ProtocolError, match="repeated"):
        server_collect_keys(ServerState(srv.params), [adverts[0], adverts[0]])


def test_tampered_ciphertext_is_detected() -> None:
    rb = np.random.default_rng(2).bytes
    clients, srv = setup(SecAggConfig(secure=False), 3, 4, rb)
    adverts = []
    for u in range(3):
        clients[u], msg = client_advertise_keys(clients[u], rb)
        adverts.append(msg)
    srv, broadcasts = server_collect_keys(srv, adverts)
    packages = []
    for u in range(3):
        clients[u], pkg = client_share_keys(clients[u], broadcasts[u], rb)
        packages.append(pkg)
    srv, routed = server_route_shares(srv, packages)
    bad = dict(routed[0].ciphertexts)
    bad[1] = bad[1][:-1] + bytes([bad[1][-1] ^ 1])
    with pytest.raises(ProtocolError, match="authentication"):
        client_mask_input(
            clients[0], RoutedShares(0, bad), np.zeros(4), np.random.default_rng()
        )


PUBLIC_MESSAGES = {AdvertiseKeys, SharePackage, MaskedInput, UnmaskResponse}


@pytest.mark.parametrize(
    "fn",
    [server_collect_keys, server_route_shares, server_collect_masked, server_unmask],
)
def test_server_functions_take_only_public_messages(fn: object) -> None:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters]  # type: ignore[arg-type]
    assert hints[params[0]] is ServerState
    for name in params[1:]:
        assert typing.get_origin(hints[name]) is Sequence
        (item,) = typing.get_args(hints[name])
        assert item in PUBLIC_MESSAGES
    # and the server state holds keys, id sets and a masked sum only
    fields = typing.get_type_hints(ServerState)
    assert set(fields) == {
        "params",
        "stage",
        "public_keys",
        "shared",
        "masked",
        "masked_sum",
    }


@pytest.mark.parametrize(
    "message",
    [
        AdvertiseKeys(3, b"a" * 32, b"b" * 32),
        KeyBroadcast(1, {0: (b"a" * 32, b"b" * 32), 5: (b"c" * 32, b"d" * 32)}),
        SharePackage(2, {0: b"xyz", 1: b""}),
        RoutedShares(2, {4: b"cipher"}),
        MaskedInput.pack(7, 20, np.arange(10, dtype=np.uint64) * 99_999),
        UnmaskRequest(0, frozenset({1, 2}), frozenset({3})),
        UnmaskResponse(0, {1: b"s1"}, {3: b"s3"}),
    ],
)
def test_messages_round_trip(message: object) -> None:
    blob = message.encode()  # type: ignore[attr-defined]
    assert type(message).decode(blob) == message  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError):
        type(message).decode(blob[:-1] if len(blob) > 1 else b"")  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match="trailing"):
        type(message).decode(blob + b"\x00")  # type: ignore[attr-defined]


def test_masked_input_packs_ceil_b_over_8_bytes_per_value() -> None:
    y = np.array([0, 2**20 - 1, 12345], dtype=np.uint64)
    packed = MaskedInput.pack(0, 20, y)
    assert len(packed.payload) == 3 * 3
    assert np.array_equal(packed.vector(), y)
