"""ChaCha20 mask expansion, X25519 + HKDF agreement, ChaCha20-Poly1305."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.secagg.prg import (
    agree,
    decrypt,
    encrypt,
    expand_mask,
    public_key,
    random_secret,
)


def _source(seed: int):  # type: ignore[no-untyped-def]
    return np.random.default_rng(seed).bytes


def test_both_sides_derive_the_same_seed() -> None:
    rb = _source(0)
    sk_a, sk_b, sk_c = (random_secret(rb) for _ in range(3))
    pk_a, pk_b, pk_c = public_key(sk_a), public_key(sk_b), public_key(sk_c)
    a_side = agree(sk_a, {7: pk_b, 9: pk_c}, b"mask", b"session", owner=3)
    b_side = agree(sk_b, {3: pk_a}, b"mask", b"session", owner=7)
    assert len(a_side[7]) == 32
    assert a_side[7] == b_side[3]
    assert a_side[7] != a_side[9]


def test_seed_depends_on_purpose_and_session() -> None:
    rb = _source(1)
    sk_a, sk_b = random_secret(rb), random_secret(rb)
    peer = {1: public_key(sk_b)}
    base = agree(sk_a, peer, b"mask", b"s1", owner=0)[1]
    assert agree(sk_a, peer, b"enc", b"s1", owner=0)[1] != base
    assert agree(sk_a, peer, b"mask", b"s2", owner=0)[1] != base


def test_expansion_is_deterministic_per_key_and_bounded() -> None:
    key = bytes(range(32))
    a = expand_mask(key, 1000, 20)
    assert np.array_equal(a, expand_mask(key, 1000, 20))
    assert a.dtype == np.uint64 and int(a.max()) < 2**20
    assert not np.array_equal(a, expand_mask(bytes(32), 1000, 20))
    wide = expand_mask(key, 1000, 62)
    assert int(wide.max()) < 2**62 and int(wide.max()) > 2**60


def test_expansion_matches_the_raw_chacha20_keystream() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = b"k" * 32
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    stream = np.frombuffer(enc.update(bytes(16)), "<u4").astype(np.uint64)
    assert np.array_equal(expand_mask(key, 4, 32), stream)


def test_expand_mask_rejects_short_seed() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand_mask(b"short", 4, 32)


def test_authenticated_encryption_round_trip_and_tamper() -> None:
    key = bytes(range(32))
    blob = encrypt(key, b"shares", b"0->1", _source(2))
    assert decrypt(key, blob, b"0->1") == b"shares"
    with pytest.raises(ValueError, match="authentication"):
        decrypt(key, blob, b"0->2")  # misrouted
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ValueError, match="authentication"):
        decrypt(key, tampered, b"0->1")
