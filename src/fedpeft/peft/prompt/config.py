"""Soft prompt tuning's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class PromptConfig(PeftConfig):
    """Soft prompt tuning (Lester et al. 2021)."""

    method: Literal["prompt"] = "prompt"
    prompt_length: int = Field(20, ge=1, le=256, description="virtual tokens L")
    prompt_init: Literal["vocab", "random", "labels"] = Field(
        "vocab", description="random vocabulary embeddings, noise or label words"
    )
