"""IA3 through HF peft."""

from fedpeft.peft.ia3.model import IA3Classifier

__all__ = ["IA3Classifier"]
