"""Options of the methods only images have (visual prompting) and of the
head-only probe every backbone has."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig

IMAGE_ONLY = ("visual-prompt",)
"""Methods that need a vision backbone."""


class VisualPromptConfig(PeftConfig):
    """Visual prompting (Bahng et al. 2022): a learned pixel-space frame."""

    method: Literal["visual-prompt"] = "visual-prompt"
    pad: int = Field(
        4,
        ge=1,
        le=64,
        description="width in pixels (at model.image_size) of the learned border",
    )


class HeadConfig(PeftConfig):
    """Head only: a linear classifier on the frozen backbone's pooled features."""

    method: Literal["head"] = "head"
