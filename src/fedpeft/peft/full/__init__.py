"""Full fine-tuning of the backbone: the baseline every PEFT method is compared to."""

from fedpeft.peft.full.model import FullFineTuneClassifier

__all__ = ["FullFineTuneClassifier"]
