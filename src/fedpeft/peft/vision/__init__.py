"""Parameter-efficient methods for a vision backbone (visual prompting; BitFit,
LoRA and full fine-tuning of a CNN are picked by ``bitfit``, ``lora`` and
``full`` when the backbone is one) and the head-only probe for any backbone."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.vision.config import IMAGE_ONLY, HeadConfig, VisualPromptConfig

PEFT_METHODS.add_component(
    "visual-prompt",
    VisualPromptConfig,
    "fedpeft.peft.vision.model:VisualPromptClassifier",
    help="visual prompting (images): a learned pixel frame around every image",
)
PEFT_METHODS.add_component(
    "head",
    HeadConfig,
    "fedpeft.peft.vision.model:HeadOnlyClassifier",
    help="head only: a linear classifier on the frozen backbone's features",
)

__all__ = ["IMAGE_ONLY", "HeadConfig", "VisualPromptConfig"]
