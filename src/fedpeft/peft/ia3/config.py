"""IA3's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class IA3Config(PeftConfig):
    """IA3 (Liu et al. 2022) through HF peft."""

    method: Literal["ia3"] = "ia3"
    target_modules: tuple[str, ...] = Field(
        (), description="module names to rescale; empty = peft's default"
    )
    feedforward_modules: tuple[str, ...] = Field(
        (),
        description="which targets are feed-forward (scaled at the input); "
        "empty = peft's default",
    )
    layers: int = Field(0, ge=0, description="rescale only the top k layers (0 = all)")
