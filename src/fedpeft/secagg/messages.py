"""The messages of the protocol and their wire encoding.

Everything the server handles is one of these: public keys, opaque ciphertexts,
masked vectors packed to ceil(b/8) bytes per value, and Shamir shares. Each
message encodes to a compact binary blob (a type byte, then big-endian u32
counts and ids and length-prefixed byte strings) and decodes back; byte counts
in the statistics are ``len()`` of these blobs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedpeft.secagg.errors import ProtocolError
from fedpeft.secagg.quantize import UInt64Array

_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client → server: the client's two X25519 public keys."""

    client_id: int
    enc_public: bytes
    mask_public: bytes

    def encode(self) -> bytes:
        w = _Writer(1)
        w.u32(self.client_id)
        w.blob(self.enc_public)
        w.blob(self.mask_public)
        return w.done()

    @classmethod
    def decode(cls, data: bytes) -> AdvertiseKeys:
        r = _Reader(data, 1)
        msg = cls(r.u32(), r.blob(), r.blob())
        r.end()
        return msg


@dataclass(frozen=True)
class KeyBroadcast:
    """Stage 0, server → client: (enc, mask) public keys of its live neighbours."""

    recipient: int
    keys: Mapping[int, tuple[bytes, bytes]]

    def encode(self) -> bytes:
        w = _Writer(2)
        w.u32(self.recipient)
        w.u32(len(self.keys))
        for v in sorted(self.keys):
            w.u32(v)
            w.blob(self.keys[v][0])
            w.blob(self.keys[v][1])
        return w.done()

    @classmethod
    def decode(cls, data: bytes) -> KeyBroadcast:
        r = _Reader(data, 2)
        recipient = r.u32()
        keys = {r.u32(): (r.blob(), r.blob()) for _ in range(r.u32())}
        r.end()
        return cls(recipient, keys)


@dataclass(frozen=True)
class SharePackage:
    """Stage 1, client → server: one encrypted share bundle per neighbour."""

    sender: int
    ciphertexts: Mapping[int, bytes]
    """recipient id → ChaCha20-Poly1305 ciphertext the server cannot open."""

    def encode(self) -> bytes:
        return _encode_routed(3, self.sender, self.ciphertexts)

    @classmethod
    def decode(cls, data: bytes) -> SharePackage:
        return cls(*_decode_routed(3, data))


@dataclass(frozen=True)
class RoutedShares:
    """Stage 1, server → client: the ciphertexts addressed to ``recipient``."""

    recipient: int
    ciphertexts: Mapping[int, bytes]
    """sender id → ciphertext."""

    def encode(self) -> bytes:
        return _encode_routed(4, self.recipient, self.ciphertexts)

    @classmethod
    def decode(cls, data: bytes) -> RoutedShares:
        return cls(*_decode_routed(4, data))


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client → server: y_u packed as ceil(b/8) little-endian bytes."""

    client_id: int
    bits: int
    length: int
    payload: bytes

    @classmethod
    def pack(cls, client_id: int, bits: int, vector: UInt64Array) -> MaskedInput:
        """Pack a vector of values < 2^b (b <= 62)."""
        width = (bits + 7) // 8
        raw = np.ascontiguousarray(vector, dtype="<u8").view(np.uint8)
        payload = raw.reshape(-1, 8)[:, :width].tobytes()
        return cls(client_id, bits, int(vector.size), payload)

    def vector(self) -> UInt64Array:
        """Unpack to uint64 values.

        Raises:
            ProtocolError: if the payload size does not match length and bits.
        """
        width = (self.bits + 7) // 8
        if len(self.payload) != width * self.length:
            raise ProtocolError(
                f"masked input of client {self.client_id} has {len(self.payload)} "
                f"bytes, expected {width * self.length}"
            )
        raw = np.zeros((self.length, 8), dtype=np.uint8)
        raw[:, :width] = np.frombuffer(self.payload, np.uint8).reshape(-1, width)
        out: UInt64Array = raw.view("<u8").ravel().astype(np.uint64)
        return out

    def encode(self) -> bytes:
        w = _Writer(5)
        w.u32(self.client_id)
        w.u32(self.bits)
        w.u32(self.length)
        w.blob(self.payload)
        return w.done()

    @classmethod
    def decode(cls, data: bytes) -> MaskedInput:
        r = _Reader(data, 5)
        msg = cls(r.u32(), r.u32(), r.u32(), r.blob())
        r.end()
        return msg


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server → client: which neighbours survived and which dropped."""

    recipient: int
    survivors: frozenset[int]
    dropped: frozenset[int]

    def encode(self) -> bytes:
        w = _Writer(6)
        w.u32(self.recipient)
        w.ids(self.survivors)
        w.ids(self.dropped)
        return w.done()

    @classmethod
    def decode(cls, data: bytes) -> UnmaskRequest:
        r = _Reader(data, 6)
        msg = cls(r.u32(), r.ids(), r.ids())
        r.end()
        return msg


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, client → server: shares of b_v (survivors) and s_v^SK (dropped)."""

    sender: int
    self_mask_shares: Mapping[int, bytes]
    mask_key_shares: Mapping[int, bytes]

    def encode(self) -> bytes:
        w = _Writer(7)
        w.u32(self.sender)
        w.table(self.self_mask_shares)
        w.table(self.mask_key_shares)
        return w.done()

    @classmethod
    def decode(cls, data: bytes) -> UnmaskResponse:
        r = _Reader(data, 7)
        msg = cls(r.u32(), r.table(), r.table())
        r.end()
        return msg


def _encode_routed(kind: int, owner: int, table: Mapping[int, bytes]) -> bytes:
    w = _Writer(kind)
    w.u32(owner)
    w.table(table)
    return w.done()


def _decode_routed(kind: int, data: bytes) -> tuple[int, dict[int, bytes]]:
    r = _Reader(data, kind)
    owner, table = r.u32(), r.table()
    r.end()
    return owner, table


class _Writer:
    def __init__(self, kind: int) -> None:
        self._parts: list[bytes] = [bytes([kind])]

    def u32(self, value: int) -> None:
        self._parts.append(_U32.pack(value))

    def blob(self, data: bytes) -> None:
        self.u32(len(data))
        self._parts.append(data)

    def ids(self, ids: Iterable[int]) -> None:
        ordered = sorted(ids)
        self.u32(len(ordered))
        for i in ordered:
            self.u32(i)

    def table(self, table: Mapping[int, bytes]) -> None:
        self.u32(len(table))
        for key in sorted(table):
            self.u32(key)
            self.blob(table[key])

    def done(self) -> bytes:
        return b"".join(self._parts)


class _Reader:
    def __init__(self, data: bytes, kind: int) -> None:
        if not data or data[0] != kind:
            raise ProtocolError(f"expected a message of type {kind}")
        self._data = memoryview(data)
        self._pos = 1

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise ProtocolError("truncated message")
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def blob(self) -> bytes:
        return self._take(self.u32())

    def ids(self) -> frozenset[int]:
        return frozenset(self.u32() for _ in range(self.u32()))

    def table(self) -> dict[int, bytes]:
        return {self.u32(): self.blob() for _ in range(self.u32())}

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError("trailing bytes after message")
