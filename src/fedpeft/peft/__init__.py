"""Parameter-efficient methods: each wraps the shared frozen backbone with a small
trainable state that is the federated payload. Importing this package registers
every method in :data:`PEFT_METHODS`."""

from fedpeft.peft import bitfit as _bitfit  # noqa: F401  (registers "bitfit")
from fedpeft.peft import full as _full  # noqa: F401  (registers "full")
from fedpeft.peft import ia3 as _ia3  # noqa: F401  (registers "ia3")
from fedpeft.peft import lora as _lora  # noqa: F401  (registers "lora")
from fedpeft.peft import prefix as _prefix  # noqa: F401  (registers "prefix")
from fedpeft.peft import prompt as _prompt  # noqa: F401  (registers "prompt")
from fedpeft.peft.base import PEFT_METHODS, AdapterClassifier, build_adapter

__all__ = ["PEFT_METHODS", "AdapterClassifier", "build_adapter"]
