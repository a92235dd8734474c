"""Layer plans: a transformer whose positions map onto another's layers,
with positions that share weights tied to one set of parameters.

The plan, the tying and the size accounting of FedSP's auxiliary model
(:mod:`fedpeft.fedsp.auxiliary`), kept here, below the backbone loader, so
that a saved auxiliary model loads like any other model directory.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerPlan:
    """How the auxiliary model's positions map onto the full model's layers.

    Attributes:
        num_layers: L, the full model's depth.
        targets: Per auxiliary position, the full layer it stands for.
        sources: Per position, the full layer its weights are copied from.
        owners: Per position, the position whose weights it uses (itself
            where it owns weights).
    """

    num_layers: int
    targets: tuple[int, ...]
    sources: tuple[int, ...]
    owners: tuple[int, ...]

    def __post_init__(self) -> None:
        depth = len(self.targets)
        if not (len(self.sources) == len(self.owners) == depth >= 1):
            raise ValueError("targets, sources and owners need one entry per position")
        for name, values in (("targets", self.targets), ("sources", self.sources)):
            if not all(0 <= v < self.num_layers for v in values):
                raise ValueError(f"{name} {values} must lie in [0, {self.num_layers})")
        if any(self.owners[o] != o for o in self.owners):
            raise ValueError(f"owners {self.owners}: an owner must own itself")

    @property
    def depth(self) -> int:
        """D, the number of auxiliary positions (layers run per forward)."""
        return len(self.targets)

    @property
    def distinct(self) -> int:
        """How many layers' worth of weights the auxiliary model stores."""
        return len(set(self.owners))

    def prefix_map(self) -> tuple[int, ...]:
        """Per full layer, the auxiliary position whose prompt it uses: the
        position standing for the nearest layer (the lower one on a tie).
        With D = L it is the identity."""
        return tuple(
            min(range(self.depth), key=lambda j: (abs(self.targets[j] - i), j))
            for i in range(self.num_layers)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "targets": list(self.targets),
            "sources": list(self.sources),
            "owners": list(self.owners),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        return cls(
            int(data["num_layers"]),
            tuple(int(v) for v in data["targets"]),
            tuple(int(v) for v in data["sources"]),
            tuple(int(v) for v in data["owners"]),
        )


def layer_plan(
    num_layers: int, depth: int | None = None, share: bool = True, source: int = 0
) -> LayerPlan:
    """The plan for a recipe.

    Args:
        num_layers: L of the full model.
        depth: D, positions kept (None: all L). Position j stands for full
            layer ``round(j·(L−1)/(D−1))``.
        share: One set of weights at every position (FedSP), copied from
            full layer ``source``; else each position owns a copy of the layer
            it stands for.
        source: The full layer the shared weights start from (negative counts
            from the end; ignored without sharing). FedSP's code uses 0.

    Raises:
        ValueError: for a depth outside [1, L] or a source outside the model.
    """
    depth = num_layers if depth is None else depth
    if not 1 <= depth <= num_layers:
        raise ValueError(f"fedsp.depth={depth}: must lie in [1, {num_layers}]")
    if depth == 1:
        targets: tuple[int, ...] = (num_layers - 1,)
    else:
        targets = tuple(round(j * (num_layers - 1) / (depth - 1)) for j in range(depth))
    if not share:
        return LayerPlan(num_layers, targets, targets, tuple(range(depth)))
    if not -num_layers <= source < num_layers:
        raise ValueError(f"fedsp.source={source}: the model has {num_layers} layers")
    return LayerPlan(num_layers, targets, (source % num_layers,) * depth, (0,) * depth)


def layer_list(model: nn.Module, count: int | None = None) -> nn.ModuleList:
    """The stack of transformer layers of a Hugging Face model (Llama's
    ``model.layers``, BERT's ``encoder.layer``): the ``ModuleList`` holding
    ``count`` modules (default ``config.num_hidden_layers``).

    Raises:
        ValueError: if there is no such list.
    """
    if count is None:
        config: Any = model.config
        count = int(config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(
        f"{type(model).__name__} has no list of {count} layers; the auxiliary "
        "model needs a Llama- or BERT-like stack"
    )


def layer_path(model: nn.Module, layers: nn.ModuleList) -> str:
    """The dotted name of ``layers`` inside ``model``."""
    return next(str(name) for name, m in model.named_modules() if m is layers)


def set_layers(model: nn.Module, path: str, layers: nn.ModuleList) -> None:
    """Put ``layers`` at ``path`` (the dotted name of the layer list)."""
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, layers)


def layer_weights(model: nn.Module) -> list[nn.Parameter]:
    """The layer stack's parameters, each shared one once."""
    return list(dict.fromkeys(layer_list(model).parameters()))


def tie_positions(layers: nn.ModuleList, plan: LayerPlan) -> nn.ModuleList:
    """Positions of ``layers`` as the plan wants them: position j becomes a
    module over the same parameters as its owner (a fresh module object, so
    per-position attributes such as the cache's ``layer_idx`` stay distinct)."""
    out = []
    for j, owner in enumerate(plan.owners):
        base = layers[owner]
        if owner == j:
            module = base
        else:
            memo: dict[int, Any] = {id(p): p for p in base.parameters()}
            memo.update({id(b): b for b in base.buffers()})
            module = copy.deepcopy(base, memo)
        for part in module.modules():
            if hasattr(part, "layer_idx"):
                setattr(part, "layer_idx", j)  # noqa: B010 (untyped HF attribute)
        out.append(module)
    return nn.ModuleList(out)


def unique_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer once (shared ones under their first name)."""
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            yield name, t


@dataclass(frozen=True)
class ModelSize:
    """A model's size, every shared tensor counted once.

    Attributes:
        parameters: Trainable-or-frozen parameters (not buffers).
        embedding: Of which the input embeddings (and an untied LM head).
        bytes: Parameter bytes at the dtype given to :func:`model_size`.
    """

    parameters: int
    embedding: int
    bytes: int


def model_size(model: nn.Module, bytes_per_value: int = 4) -> ModelSize:
    """Size of a Hugging Face model (the auxiliary model or the full one)."""
    embeddings = {id(model.get_input_embeddings().weight)}  # type: ignore[operator]
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if head is not None:
        embeddings.add(id(head.weight))
    params = embedding = 0
    for _, p in model.named_parameters():  # deduplicated by torch
        params += p.numel()
        if id(p) in embeddings:
            embedding += p.numel()
    return ModelSize(params, embedding, params * bytes_per_value)
