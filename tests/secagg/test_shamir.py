"""Shamir secret sharing over GF(2^521 − 1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.secagg.shamir import (
    PRIME,
    SHARE_BYTES,
    interpolate_at_zero,
    reconstruct,
    share,
)


def _bytes_source(seed: int):  # type: ignore[no-untyped-def]
    return np.random.default_rng(seed).bytes


@given(
    secret=st.binary(min_size=1, max_size=65),
    n=st.integers(1, 8),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_any_t_shares_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    ids = data.draw(
        st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True)
    )
    shares = share(secret, t, ids, _bytes_source(n))
    assert all(len(s) == SHARE_BYTES for s in shares.values())
    for subset in itertools.combinations(ids, t):
        assert reconstruct({i: shares[i] for i in subset}, t) == secret


def test_t_minus_one_shares_are_refused_and_do_not_interpolate_to_the_secret() -> None:
    secret = bytes(range(32))
    shares = share(secret, 4, [0, 1, 2, 3, 4, 5], _bytes_source(0))
    few = {i: shares[i] for i in (1, 3, 5)}
    with pytest.raises(ValueError, match="at least t=4"):
        reconstruct(few, 4)
    points = [(i + 1, int.from_bytes(s[1:], "big")) for i, s in few.items()]
    assert interpolate_at_zero(points) != int.from_bytes(secret, "big")


def test_t_minus_one_shares_fit_every_secret() -> None:
    # Information-theoretic hiding: for ANY candidate secret c there is a third
    # share that completes the two real ones into a valid sharing of c.
    shares = share(b"\x07" * 32, 3, [0, 1, 2], _bytes_source(1))
    pts = [(i + 1, int.from_bytes(shares[i][1:], "big")) for i in (0, 1)]
    x3 = 3  # party 2
    for candidate in (b"\x00" * 32, b"\xff" * 32, bytes(range(32))):
        c = int.from_bytes(candidate, "big")
        # f(x3) = g(0) for g(z) = f(z + x3): shift the points by −x3
        y3 = interpolate_at_zero([(-x3, c), *((x - x3, y) for x, y in pts)])
        fake = bytes([32]) + y3.to_bytes(66, "big")
        assert reconstruct({0: shares[0], 1: shares[1], 2: fake}, 3) == candidate


def test_share_is_random_per_call() -> None:
    a = share(b"k" * 32, 2, [0, 1], _bytes_source(1))
    b = share(b"k" * 32, 2, [0, 1], _bytes_source(2))
    assert a[0] != b[0]


def test_leading_zero_bytes_survive() -> None:
    secret = b"\x00\x00\x01"
    shares = share(secret, 2, [3, 9], _bytes_source(3))
    assert reconstruct(shares, 2) == secret


@pytest.mark.parametrize(
    ("secret", "t", "ids", "message"),
    [
        (b"", 1, [0], "1 to 65 bytes"),
        (b"x" * 66, 1, [0], "1 to 65 bytes"),
        (b"x", 3, [0, 1], r"t must be in \[1, 2\]"),
        (b"x", 1, [0, 0], "distinct"),
        (b"x", 1, [-1], "ints in"),
    ],
)
def test_share_rejects_bad_arguments(
    secret: bytes, t: int, ids: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        share(secret, t, ids, _bytes_source(0))


def test_reconstruct_rejects_malformed_and_inconsistent_shares() -> None:
    shares = share(b"s" * 32, 2, [0, 1, 2], _bytes_source(4))
    with pytest.raises(ValueError, match="malformed"):
        reconstruct({0: shares[0][:-1], 1: shares[1]}, 2)
    # a corrupted share moves f(0) by a large field element: detected because
    # the result no longer fits the secret's 32 bytes (a small change would not be)
    y = (int.from_bytes(shares[1][1:], "big") + 2**400) % PRIME
    forged = shares[1][:1] + y.to_bytes(66, "big")
    with pytest.raises(ValueError, match="inconsistent"):
        reconstruct({0: shares[0], 1: forged}, 2)
