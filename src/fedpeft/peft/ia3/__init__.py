"""IA3 through HF peft: options in :mod:`.config`, the adapter in :mod:`.model`
(imported on first build)."""

from fedpeft.peft.config import PEFT_METHODS
from fedpeft.peft.ia3.config import IA3Config

PEFT_METHODS.add_component(
    "ia3",
    IA3Config,
    "fedpeft.peft.ia3.model:IA3Classifier",
    help="IA3 (HF peft): learned rescaling of K, V, FFN",
)

__all__ = ["IA3Config"]
