"""SecAggConfig validation names the field; dict round trip."""

from __future__ import annotations

import pytest

from fedpeft.secagg import SecAggConfig


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": 63}, "bits"),
        ({"bits": 1}, "bits"),
        ({"bits": 32.0}, "bits"),
        ({"clip_range": 0.0}, "clip_range"),
        ({"clip_range": float("inf")}, "clip_range"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"neighbours": "ring"}, "neighbours"),
        ({"neighbours": 0}, "neighbours"),
        ({"value_bits": 40, "bits": 32}, "value_bits"),
        ({"secure": 1}, "secure"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"SecAggConfig.{field}"):
        SecAggConfig(**kwargs)  # type: ignore[arg-type]


def test_dict_round_trip_and_unknown_keys() -> None:
    config = SecAggConfig(bits=40, threshold=3, neighbours="log2", secure=False)
    assert SecAggConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown SecAggConfig keys"):
        SecAggConfig.from_dict({"bitz": 3})
