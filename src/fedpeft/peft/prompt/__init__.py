"""Soft prompt tuning (Lester et al. 2021)."""

from fedpeft.peft.prompt.model import SoftPromptClassifier

__all__ = ["SoftPromptClassifier"]
