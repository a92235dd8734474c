"""Soft prompt tuning (Lester et al. 2021): options in :mod:`.config`, the
adapter in :mod:`.model` (imported on first build)."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.prompt.config import PromptConfig

PEFT_METHODS.add_component(
    "prompt",
    PromptConfig,
    "fedpeft.peft.prompt.model:SoftPromptClassifier",
    help="soft prompt tuning: L vectors prepended to the input",
)

__all__ = ["PromptConfig"]
