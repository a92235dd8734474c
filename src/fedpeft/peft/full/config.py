"""Full fine-tuning's options: none beyond the common ones."""

from __future__ import annotations

from typing import Literal

from fedpeft.peft.config import PeftConfig


class FullConfig(PeftConfig):
    """Full fine-tuning of the backbone (the baseline)."""

    method: Literal["full"] = "full"
