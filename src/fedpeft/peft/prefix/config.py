"""Prefix tuning's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class PrefixConfig(PeftConfig):
    """Prefix / deep prompt tuning (Li & Liang 2021; Liu et al. 2022)."""

    method: Literal["prefix"] = "prefix"
    prefix_length: int = Field(10, ge=1, le=256, description="prefix positions")
    prefix_init: Literal["vocab", "random"] = Field(
        "vocab", description="keys/values of random vocabulary tokens, or noise"
    )
    prefix_projection: bool = Field(
        False, description="reparameterise the prefix through an MLP"
    )
    projection_dim: int = Field(128, ge=1, description="width of that MLP")
