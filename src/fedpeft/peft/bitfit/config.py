"""BitFit's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class BitFitConfig(PeftConfig):
    """BitFit (Ben Zaken et al. 2022): only the backbone's biases train."""

    method: Literal["bitfit"] = "bitfit"
    layers: int = Field(
        0, ge=0, description="train only the top k layers' biases (0 = all)"
    )
