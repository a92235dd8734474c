"""BitFit: bias-only fine-tuning."""

from fedpeft.peft.bitfit.model import BitFitClassifier

__all__ = ["BitFitClassifier"]
