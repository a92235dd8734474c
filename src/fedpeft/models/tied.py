"""Loading a model directory whose layers share weights (a saved FedSP
auxiliary model): ``config.json`` carries the layer plan under
``fedpeft_auxiliary``, ``model.safetensors`` each tensor once; positions that
share weights are tied again on load. It needs nothing of the model the
directory was made from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from fedpeft.models.layer_plan import (
    LayerPlan,
    layer_list,
    tie_positions,
    unique_tensors,
)

PLAN_KEY = "fedpeft_auxiliary"
MARKER = "fedpeft-auxiliary.json"
"""Written last into a finished directory: the recipe, data and distillation log."""
WEIGHTS = "model.safetensors"


def is_tied_directory(directory: Path) -> bool:
    """Whether ``directory`` holds a finished model with a layer plan."""
    return (directory / MARKER).is_file() and (directory / WEIGHTS).is_file()


def load_tied(directory: Path) -> tuple[Any, Any, str]:
    """The model (frozen, eval mode), its tokenizer and kind (``"decoder"`` or
    ``"encoder"``) saved in ``directory``.

    Raises:
        ValueError: if the directory is not a finished model with a plan, or
            its weights do not fit the plan (a corrupt or foreign file).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if not is_tied_directory(directory):
        raise ValueError(
            f"{directory} is not a finished auxiliary model (no {MARKER} or "
            f"{WEIGHTS}); build it again with fedpeft's fedsp section"
        )
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    plan = LayerPlan.from_dict(getattr(config, PLAN_KEY))
    decoder = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    loader = AutoModelForCausalLM if decoder else AutoModel
    model = loader.from_config(config)  # type: ignore[no-untyped-call]
    layers = layer_list(model)
    path = next(n for n, m in model.named_modules() if m is layers)
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, tie_positions(layers, plan))
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{directory / WEIGHTS} is unreadable ({err})") from None
    _load_unique(model, tensors, directory)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return model, tokenizer, "decoder" if decoder else "encoder"


def _load_unique(model: nn.Module, tensors: dict[str, Any], where: Path) -> None:
    """Copy ``tensors`` into the model's unique tensors, requiring an exact fit."""
    expected = dict(unique_tensors(model))
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where / WEIGHTS} does not fit its plan: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; the file is corrupt or from another model"
        )
    for name, target in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{where / WEIGHTS}: {name} has shape {tuple(value.shape)}, the plan "
                f"needs {tuple(target.shape)}"
            )
        target.data.copy_(value)
