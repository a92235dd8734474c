"""The two sides of a FedSP prompt: the server's adapter on the full model and
the clients' on the auxiliary model, with the same trainable state."""

from __future__ import annotations

from typing import Any

from fedpeft.experiment import Experiment
from fedpeft.fedsp.recipe import Auxiliary
from fedpeft.models.backbone import Backbone
from fedpeft.peft.base import AdapterClassifier
from fedpeft.peft.config import PEFT_METHODS
from fedpeft.seeding import stream, torch_generator


def fedsp_adapters(
    exp: Experiment, aux: Auxiliary
) -> tuple[AdapterClassifier, AdapterClassifier]:
    """The server's adapter (full model) and the clients' (auxiliary model).

    A prefix trained on a shallower auxiliary model is served on the full one
    through the plan's layer map (each full layer uses the prompt of the
    auxiliary position standing for the nearest layer); with the full depth
    the two states have identical names and shapes, and so for input prompts.
    Both start from the server's initial state (its ``vocab`` prefix init
    reads the full model's keys and values).
    """
    plan = aux.plan
    extra: dict[str, Any] = {}
    if exp.config.peft.method == "prefix" and plan.depth < plan.num_layers:
        extra["layer_map"] = plan.prefix_map()
    server = _adapter(exp, exp.backbone, extra)
    client = _adapter(exp, aux.backbone, {})
    client.load_trainable_state(server.trainable_state())
    return server, client


def _adapter(
    exp: Experiment, backbone: Backbone, extra: dict[str, Any]
) -> AdapterClassifier:
    peft = exp.config.peft
    factory = PEFT_METHODS.factory(peft.method)
    adapter = factory(
        backbone,
        exp.num_classes,
        generator=torch_generator(stream(exp.config.seed, "init")),
        label_names=exp.corpus.label_names,
        **peft.adapter_options(),
        **extra,
    )
    return adapter.to(backbone.device)
