"""t-of-n Shamir secret sharing over the prime field GF(2^521 − 1).

Shamir 1979, "How to Share a Secret": the secret s is the constant term of a
random polynomial f of degree t − 1 over GF(p); party i gets f(x_i). Any t points
determine f and hence s = f(0) (Lagrange interpolation at 0); t − 1 points are
consistent with every secret, so they reveal nothing about it. Bonawitz et al.
2017 (§4, ShareKeys) share each client's self-mask seed b_u and masking secret
key s_u^SK this way so the server can recover from dropouts.

Field choice: p = 2^521 − 1 (a Mersenne prime) holds any secret of up to 65
bytes in ONE field element, so a 32-byte seed or X25519 key is shared whole,
without chunking. Python's big integers do the arithmetic; no well-kept library
offers plain Shamir over a large prime field for bytes, hence this module.

Share format (67 bytes): one byte with the secret's length, then f(x) as a
66-byte big-endian integer. Party id i is evaluated at x = i + 1 (x = 0 is the
secret). Polynomial coefficients are drawn from ``random_bytes``: 82 bytes
(656 bits) reduced mod p, statistically 2^-135-close to uniform and with no
retry loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

PRIME = 2**521 - 1
FIELD_BYTES = 66
MAX_SECRET_BYTES = 65
SHARE_BYTES = 1 + FIELD_BYTES
_COEFF_BYTES = 82
MAX_ID = 2**32 - 1

RandomBytes = Callable[[int], bytes]
"""A source of n random bytes: ``os.urandom`` (secure) or a seeded generator's
``bytes`` method (tests only)."""


def share(
    secret: bytes,
    t: int,
    ids: Sequence[int],
    random_bytes: RandomBytes = os.urandom,
) -> dict[int, bytes]:
    """Split ``secret`` into one share per id; any ``t`` of them reconstruct it.

    Args:
        secret: 1 to 65 bytes.
        t: Threshold, 1 <= t <= len(ids). t = 1 makes every share the secret.
        ids: Distinct party ids in [0, 2^32 − 1].
        random_bytes: Source of the polynomial's random coefficients.

    Returns:
        ``{id: share}`` with 67-byte shares.

    Raises:
        ValueError: on an empty or too long secret, bad ``t`` or bad ids.
    """
    if not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"secret must be 1 to {MAX_SECRET_BYTES} bytes, got {len(secret)}"
        )
    _check_ids(ids)
    if not 1 <= t <= len(ids):
        raise ValueError(f"threshold t must be in [1, {len(ids)}], got {t}")
    coeffs = [int.from_bytes(secret, "big")]
    coeffs += [_random_element(random_bytes) for _ in range(t - 1)]
    header = bytes([len(secret)])
    return {
        i: header + _evaluate(coeffs, i + 1).to_bytes(FIELD_BYTES, "big") for i in ids
    }


def reconstruct(shares: Mapping[int, bytes], t: int) -> bytes:
    """Recover the secret from at least ``t`` shares (Lagrange at x = 0).

    The ``t`` shares with the smallest ids are used.

    Raises:
        ValueError: if fewer than ``t`` shares are given, a share is malformed,
            the shares disagree on the secret's length, or the interpolated
            value does not fit that length (inconsistent shares).
    """
    if t < 1:
        raise ValueError(f"threshold t must be >= 1, got {t}")
    if len(shares) < t:
        raise ValueError(
            f"need at least t={t} shares to reconstruct, got {len(shares)}"
        )
    _check_ids(list(shares))
    chosen = sorted(shares)[:t]
    length, points = _parse(shares, chosen)
    value = interpolate_at_zero(points)
    if value >= 256**length:
        raise ValueError("shares are inconsistent: they do not encode one secret")
    return value.to_bytes(length, "big")


def interpolate_at_zero(points: Sequence[tuple[int, int]]) -> int:
    """f(0) for the unique polynomial of degree < len(points) through ``points``.

    f(0) = Σ_j y_j Π_{m≠j} x_m / (x_m − x_j)  (mod p).

    Raises:
        ValueError: if two points share an x or an x is 0 mod p.
    """
    xs = [x % PRIME for x, _ in points]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise ValueError("interpolation points need distinct, non-zero x")
    total = 0
    for j, (x_j, y_j) in enumerate(points):
        num, den = 1, 1
        for m, (x_m, _) in enumerate(points):
            if m != j:
                num = num * x_m % PRIME
                den = den * (x_m - x_j) % PRIME
        total = (total + y_j * num * pow(den, -1, PRIME)) % PRIME
    return total


def _evaluate(coeffs: Sequence[int], x: int) -> int:
    """Horner evaluation of Σ_k coeffs[k] x^k mod p."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


def _random_element(random_bytes: RandomBytes) -> int:
    raw = random_bytes(_COEFF_BYTES)
    if len(raw) != _COEFF_BYTES:
        raise ValueError(f"random_bytes({_COEFF_BYTES}) returned {len(raw)} bytes")
    return int.from_bytes(raw, "big") % PRIME


def _check_ids(ids: Sequence[int]) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"share ids must be distinct, got {sorted(ids)}")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_ID:
            raise ValueError(f"share ids must be ints in [0, {MAX_ID}], got {i!r}")


def _parse(
    shares: Mapping[int, bytes], chosen: Sequence[int]
) -> tuple[int, list[tuple[int, int]]]:
    lengths = set()
    points = []
    for i in chosen:
        raw = shares[i]
        if len(raw) != SHARE_BYTES or not 1 <= raw[0] <= MAX_SECRET_BYTES:
            raise ValueError(
                f"share of party {i} is malformed: expected {SHARE_BYTES} bytes "
                f"with a length byte in [1, {MAX_SECRET_BYTES}]"
            )
        y = int.from_bytes(raw[1:], "big")
        if y >= PRIME:
            raise ValueError(f"share of party {i} is not a field element")
        lengths.add(raw[0])
        points.append((i + 1, y))
    if len(lengths) != 1:
        raise ValueError(f"shares disagree on the secret length: {sorted(lengths)}")
    return lengths.pop(), points
