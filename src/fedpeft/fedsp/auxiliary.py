"""The auxiliary model: a small stand-in for the full model that clients tune
prompts on (FedSP, Dong et al. 2023, "Tunable Soft Prompts are Messengers in
Federated Learning", §3.2; Offsite-Tuning, Xiao et al. 2023, §3.2).

Two compressions of the stack of L transformer layers, alone or together:

- **layer sharing** (FedSP): one layer's weights at every position. The
  auxiliary model keeps all L positions, so a prefix prompt of every layer
  moves between it and the full model unchanged.
- **depth reduction** (Offsite-Tuning's layer drop): keep D < L positions,
  standing for evenly spaced full layers (first and last included).

A :class:`LayerPlan` says, per auxiliary position, which full layer it stands
for (its distillation target and the layers whose prompt it carries), which
full layer its weights start from, and which position owns the weights it
uses. Positions that share weights are distinct modules over the *same*
``nn.Parameter`` objects: the storage exists once, and ``parameters()`` counts
it once. The embeddings, final norm and LM head are the full model's (the
verbalizer rows and the prompt space stay the same on both sides).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.layer_plan import (
    LayerPlan,
    ModelSize,
    layer_list,
    layer_path,
    layer_plan,
    model_size,
    set_layers,
    tie_positions,
    unique_tensors,
)
from fedpeft.models.tied import PLAN_KEY

__all__ = [
    "LayerPlan",
    "ModelSize",
    "build_auxiliary",
    "layer_list",
    "layer_plan",
    "model_size",
    "tie_positions",
    "unique_tensors",
]


def build_auxiliary(backbone: Backbone, plan: LayerPlan) -> Backbone:
    """A new backbone, frozen, whose layer stack follows ``plan``.

    The full model is not modified; the auxiliary model copies (never
    aliases) what it keeps, so training it cannot touch the full model.

    Raises:
        ValueError: if the plan was made for another depth.
    """
    model = backbone.model
    full = layer_list(model)
    if plan.num_layers != len(full):
        raise ValueError(
            f"plan for {plan.num_layers} layers; {backbone.name!r} has {len(full)}"
        )
    path = layer_path(model, full)
    set_layers(model, path, nn.ModuleList())  # deep-copy all but the stack
    try:
        aux = copy.deepcopy(model)
    finally:
        set_layers(model, path, full)
    owned = nn.ModuleList(
        copy.deepcopy(full[plan.sources[j]]) if plan.owners[j] == j else nn.Identity()
        for j in range(plan.depth)
    )
    set_layers(aux, path, tie_positions(owned, plan))
    _set_depth(aux.config, plan)
    aux.config.architectures = [type(aux).__name__]  # how a client rebuilds it
    aux.eval()
    aux.requires_grad_(False)
    return Backbone(
        name=f"{backbone.name}:auxiliary",
        model=aux,
        tokenizer=backbone.tokenizer,
        kind=backbone.kind,
    )


def _set_depth(config: Any, plan: LayerPlan) -> None:
    """Make the config describe D layers (and record the plan in it)."""
    config.num_hidden_layers = plan.depth
    types = getattr(config, "layer_types", None)
    if types:
        config.layer_types = [types[t] for t in plan.targets]
    setattr(config, PLAN_KEY, plan.as_dict())
