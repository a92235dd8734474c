"""LoRA through HF peft: options in :mod:`.config`, the adapter in :mod:`.model`
(imported on first build)."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.lora.config import LoraConfig

PEFT_METHODS.add_component(
    "lora",
    LoraConfig,
    "fedpeft.peft.vision.model:build_lora",
    help="LoRA (HF peft): W + (α/r)·B·A on target layers",
)

__all__ = ["LoraConfig"]
