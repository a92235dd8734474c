"""Full fine-tuning of the backbone, the baseline every PEFT method is compared
to: options in :mod:`.config`, the model in :mod:`.model` (imported on first
build)."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.full.config import FullConfig

PEFT_METHODS.add_component(
    "full",
    FullConfig,
    "fedpeft.peft.vision.model:build_full",
    help="full fine-tuning of the backbone (baseline)",
)

__all__ = ["FullConfig"]
