"""Black-box prompt tuning (BBT, Sun et al. 2022; FedBPT, Sun et al. 2024):
options in :mod:`.config`, the adapter in :mod:`.model` (imported on first
build). Clients search z by CMA-ES through :mod:`fedpeft.blackbox`."""

from fedpeft.peft.blackbox.config import BlackBoxConfig
from fedpeft.peft.config import PEFT_METHODS

PEFT_METHODS.add_component(
    "blackbox",
    BlackBoxConfig,
    "fedpeft.peft.blackbox.model:BlackBoxPromptClassifier",
    help="black-box prompt: L vectors A·z, z searched by CMA-ES without gradients",
)

__all__ = ["BlackBoxConfig"]
