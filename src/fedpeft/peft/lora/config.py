"""LoRA's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class LoraConfig(PeftConfig):
    """LoRA (Hu et al. 2022) through HF peft."""

    method: Literal["lora"] = "lora"
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha (scaling alpha/r)")
    rank_scaling: Literal["standard", "rslora"] = Field(
        "standard", description="LoRA scaling: alpha/r or alpha/sqrt(r) (rsLoRA)"
    )
    target_modules: tuple[str, ...] = Field(
        (), description="module names to adapt; empty = peft's default"
    )
    layers: int = Field(0, ge=0, description="adapt only the top k layers (0 = all)")
