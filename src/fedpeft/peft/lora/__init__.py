"""LoRA through HF peft."""

from fedpeft.peft.lora.model import LoraClassifier

__all__ = ["LoraClassifier"]
