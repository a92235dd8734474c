"""Cryptographic primitives of secure aggregation, all from ``cryptography``.

- Mask expansion: a 32-byte seed keys ChaCha20 (RFC 8439), whose keystream is
  read as little-endian integers mod 2^b. This is the PRG of Bonawitz et al.
  2017 (§3, "Pseudorandom Generators"). numpy's generators are not CSPRNGs and
  are never used for masks.
- Key agreement: X25519 (RFC 7748) plus HKDF-SHA256 (RFC 5869) turns two
  parties' key pairs into a shared 32-byte seed (Bonawitz et al. 2017, §3, "Key
  Agreement"; the KA.agree step), bound to a session id, a purpose and the
  unordered pair of client ids.
- Authenticated encryption: ChaCha20-Poly1305 (RFC 8439) with a random 96-bit
  nonce protects the Shamir shares routed through the server (§3,
  "Authenticated Encryption").

Seeds and keys are fresh every round, so ChaCha20 runs with a fixed all-zero
nonce for mask expansion: a (key, nonce) pair is never reused across rounds.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpeft.secagg.quantize import MAX_BITS, UInt64Array
from fedpeft.secagg.shamir import RandomBytes

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_CHACHA_NONCE = bytes(16)  # 32-bit block counter 0 + 96-bit nonce 0
_HKDF_PREFIX = b"fedpeft-secagg-v1"
_U32 = struct.Struct(">I")


def expand_mask(seed: bytes, length: int, bits: int) -> UInt64Array:
    """PRG(seed): ``length`` pseudorandom values uniform in [0, 2^b).

    Each value takes 4 keystream bytes when b <= 32 and 8 otherwise; taking the
    low b bits of a uniform word keeps it uniform because 2^b divides 2^32 or
    2^64. Deterministic: the same (seed, length, bits) gives the same vector.

    Raises:
        ValueError: if the seed is not 32 bytes, ``length`` < 0 or b is outside
            [1, 62].
    """
    if len(seed) != KEY_BYTES:
        raise ValueError(f"mask seed must be {KEY_BYTES} bytes, got {len(seed)}")
    if length < 0 or not 1 <= bits <= MAX_BITS:
        raise ValueError(
            f"need length >= 0 and bits in [1, {MAX_BITS}], got {length}, {bits}"
        )
    word = 4 if bits <= 32 else 8
    encryptor = Cipher(algorithms.ChaCha20(seed, _CHACHA_NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(word * length))
    words = np.frombuffer(stream, dtype="<u4" if word == 4 else "<u8")
    mask: UInt64Array = words.astype(np.uint64) & np.uint64((1 << bits) - 1)
    return mask


def random_secret(random_bytes: RandomBytes) -> bytes:
    """32 secret bytes from ``random_bytes``: a raw X25519 private key (X25519
    clamps the scalar itself) or a self-mask seed b_u.

    Pass ``os.urandom`` in secure mode.
    """
    raw = random_bytes(KEY_BYTES)
    if len(raw) != KEY_BYTES:
        raise ValueError(f"random_bytes({KEY_BYTES}) returned {len(raw)} bytes")
    return raw


def public_key(private_key: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a raw private key."""
    return (
        X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()
    )


def agree(
    private_key: bytes,
    peer_public_keys: Mapping[int, bytes],
    purpose: bytes,
    session: bytes,
    owner: int,
) -> dict[int, bytes]:
    """KA.agree then HKDF-SHA256 with each peer: seeds both sides derive alike.

    The seed of the pair (u, v) is HKDF-SHA256(X25519(sk_u, pk_v), info =
    prefix | purpose | session | min(u, v) | max(u, v)), 32 bytes; v computes
    the same value from (sk_v, pk_u).

    Args:
        private_key: Own raw X25519 private key (of client ``owner``).
        peer_public_keys: peer id -> the peer's raw X25519 public key.
        purpose: Domain separation, e.g. ``b"mask"`` or ``b"enc"``.
        session: Public per-round identifier.
        owner: Own client id.

    Returns:
        peer id -> 32-byte seed.

    Raises:
        ValueError: on a malformed key or a low-order peer key (all-zero
            shared secret, refused by ``cryptography``).
    """
    own = X25519PrivateKey.from_private_bytes(private_key)  # costly: load once
    seeds = {}
    for peer, peer_key in peer_public_keys.items():
        shared = own.exchange(X25519PublicKey.from_public_bytes(peer_key))
        low, high = sorted((owner, peer))
        info = b"|".join(
            [_HKDF_PREFIX, purpose, session, _U32.pack(low), _U32.pack(high)]
        )
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
        seeds[peer] = hkdf.derive(shared)
    return seeds


def encrypt(
    key: bytes, plaintext: bytes, associated_data: bytes, random_bytes: RandomBytes
) -> bytes:
    """ChaCha20-Poly1305: returns nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)."""
    nonce = random_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"random_bytes({NONCE_BYTES}) returned {len(nonce)} bytes")
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def decrypt(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`encrypt`.

    Raises:
        ValueError: if the blob is truncated or fails authentication (wrong key,
            wrong associated data, or tampering).
    """
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise ValueError(f"ciphertext of {len(blob)} bytes is truncated")
    try:
        return ChaCha20Poly1305(key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data
        )
    except InvalidTag:
        raise ValueError("ciphertext failed authentication") from None
