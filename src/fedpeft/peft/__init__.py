"""Parameter-efficient methods: each wraps the shared frozen backbone with a small
trainable state that is the federated payload."""

from fedpeft.peft import full as _full  # noqa: F401  (registers "full")
from fedpeft.peft import prompt as _prompt  # noqa: F401  (registers "prompt")
from fedpeft.peft.base import PEFT_METHODS, AdapterClassifier, build_adapter

__all__ = ["PEFT_METHODS", "AdapterClassifier", "build_adapter"]
