"""Parameter-efficient methods: each wraps the shared frozen backbone with a small
trainable state that is the federated payload.

Importing this package registers every shipped method in :data:`PEFT_METHODS`
(options class + adapter class) without importing torch: the adapter modules
load on the first build. A new method is one folder here (``config.py``,
``model.py`` and an ``__init__`` that registers them), found and imported
below with no edit elsewhere; a method defined outside the package registers
itself the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedpeft.peft.config import PEFT_METHODS, PeftConfig, peft_config
from fedpeft.registry import register_submodules

register_submodules(__name__, __path__, packages_only=True)

if TYPE_CHECKING:
    from fedpeft.peft.base import AdapterClassifier, build_adapter

__all__ = [
    "PEFT_METHODS",
    "AdapterClassifier",
    "PeftConfig",
    "build_adapter",
    "peft_config",
]

_LAZY = {"AdapterClassifier", "build_adapter"}


def __getattr__(name: str) -> Any:
    """The torch-backed names, imported on first access."""
    if name in _LAZY:
        from fedpeft.peft import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
