"""Prefix / deep prompt tuning."""

from fedpeft.peft.prefix.model import PrefixClassifier

__all__ = ["PrefixClassifier"]
