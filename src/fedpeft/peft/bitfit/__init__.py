"""BitFit, bias-only fine-tuning: options in :mod:`.config`, the adapter in
:mod:`.model` (imported on first build)."""

from fedpeft.peft.bitfit.config import BitFitConfig
from fedpeft.peft.config import PEFT_METHODS

PEFT_METHODS.add_component(
    "bitfit",
    BitFitConfig,
    "fedpeft.peft.vision.model:build_bitfit",
    help="BitFit: train only the backbone's biases",
)

__all__ = ["BitFitConfig"]
