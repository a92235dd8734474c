"""Prefix / deep prompt tuning: options in :mod:`.config`, the adapter in
:mod:`.model` (imported on first build)."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.prefix.config import PrefixConfig

PEFT_METHODS.add_component(
    "prefix",
    PrefixConfig,
    "fedpeft.peft.prefix.model:PrefixClassifier",
    help="prefix / deep prompt tuning: trainable keys and values per layer",
)

__all__ = ["PrefixConfig"]
