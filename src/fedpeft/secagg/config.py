"""The secure-aggregation configuration (one frozen, validated dataclass)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedpeft.secagg.quantize import MAX_BITS, MAX_VALUE_BITS

GraphKind = Literal["complete", "log2"]


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters of one secure-aggregation round.

    Attributes:
        bits: b, the masked vectors live in Z_(2^b); 2 <= b <= 62. Each value
            travels as ceil(b/8) bytes, so b = 32 costs exactly the fp32 payload.
        clip_range: r > 0; every coordinate is clipped to [-r, r] before it is
            quantized.
        threshold: Shamir threshold t. A float in (0, 1] is a fraction of each
            client's neighbourhood (t_u = max(1, ceil(fraction * |N(u)|))); an
            int >= 1 is t itself and must not exceed the smallest neighbourhood.
        neighbours: the communication graph: ``"complete"`` (Bonawitz et al.
            2017), ``"log2"`` (SecAgg+, Bell et al. 2020: a Harary graph of
            degree k = 2 * ceil(log2(N)) rounded to even) or an int degree k.
        value_bits: q, bits per quantized value. ``None`` picks the largest q
            with N * (2^q - 1) < 2^b for the round's N (see
            :func:`fedpeft.secagg.quantize.safe_value_bits`).
        secure: True draws key material, self-mask seeds, the public graph seed
            and the rounding noise from OS entropy. False uses a caller's seeded
            ``numpy.random.Generator`` for everything: reproducible and INSECURE
            (for tests and benchmarks only).
    """

    bits: int = 32
    clip_range: float = 1.0
    threshold: float | int = 0.5
    neighbours: int | GraphKind = "complete"
    value_bits: int | None = None
    secure: bool = True

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, 2, MAX_BITS)
        _check_clip_range(self.clip_range)
        _check_threshold(self.threshold)
        _check_neighbours(self.neighbours)
        if self.value_bits is not None:
            _check_int("value_bits", self.value_bits, 1, min(self.bits, MAX_VALUE_BITS))
        if not isinstance(self.secure, bool):
            raise ValueError(f"SecAggConfig.secure must be a bool, got {self.secure!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggConfig:
        """Build a config from a mapping, refusing unknown keys."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown SecAggConfig keys {unknown}; allowed: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**dict(data))


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise ValueError(
            f"SecAggConfig.{name} must be an integer in [{low}, {high}], got {value!r}"
        )


def _check_clip_range(value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"SecAggConfig.clip_range must be a finite number > 0, got {value!r}"
        )


def _check_threshold(value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(
                f"SecAggConfig.threshold as an int is t and must be >= 1, got {value!r}"
            )
        return
    if not isinstance(value, float) or not 0.0 < value <= 1.0:
        raise ValueError(
            "SecAggConfig.threshold must be a fraction in (0, 1] (float) or "
            f"t >= 1 (int), got {value!r}"
        )


def _check_neighbours(value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(
                f"SecAggConfig.neighbours as an int is the degree k and must be "
                f">= 1, got {value!r}"
            )
        return
    if value not in ("complete", "log2"):
        raise ValueError(
            "SecAggConfig.neighbours must be 'complete', 'log2' or an int degree "
            f"k >= 1, got {value!r}"
        )
