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
    layer_path,
    set_layers,
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
    from safetensors import SafetensorError, safe_open
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
    model = _with_owned_layers_only(loader, config, plan)
    try:
        with safe_open(str(directory / WEIGHTS), framework="pt") as handle:
            _load_unique(model, handle, directory)  # one tensor at a time
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{directory / WEIGHTS} is unreadable ({err})") from None
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return model, tokenizer, "decoder" if decoder else "encoder"


def _with_owned_layers_only(loader: Any, config: Any, plan: LayerPlan) -> Any:
    """The model of ``config`` built with only the layers that own weights
    (memory of the auxiliary model, not of its depth), then given its D
    positions by the plan."""
    owners = sorted(set(plan.owners))
    depth, types = config.num_hidden_layers, getattr(config, "layer_types", None)
    config.num_hidden_layers = len(owners)
    if types:
        config.layer_types = [types[o] for o in owners]
    model = loader.from_config(config)
    config.num_hidden_layers = depth  # the model keeps this config object
    if types:
        config.layer_types = types
    built = layer_list(model, len(owners))
    slots: list[nn.Module] = [nn.Identity()] * depth
    for rank, owner in enumerate(owners):
        slots[owner] = built[rank]
    set_layers(
        model, layer_path(model, built), tie_positions(nn.ModuleList(slots), plan)
    )
    return model


def _load_unique(model: nn.Module, handle: Any, where: Path) -> None:
    """Copy the file's tensors into the model's unique tensors, requiring an
    exact fit (``handle``: an open safetensors file)."""
    expected = dict(unique_tensors(model))
    names = set(handle.keys())
    missing = sorted(set(expected) - names)
    extra = sorted(names - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where / WEIGHTS} does not fit its plan: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; the file is corrupt or from another model"
        )
    for name, target in expected.items():
        value = handle.get_tensor(name)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{where / WEIGHTS}: {name} has shape {tuple(value.shape)}, the plan "
                f"needs {tuple(target.shape)}"
            )
        target.data.copy_(value)
