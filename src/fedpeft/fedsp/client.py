"""FedSP's local model stage: before tuning the prompt each round, a client
tunes its own copy of the auxiliary model's layer weights (prompt frozen) on
its data. The copy stays on the client across rounds and is never sent (in
FedSP's code clients alternate a model stage and a prompt stage and keep
their aux models; only the prompt is aggregated).

In one process all clients share one auxiliary model, so a client's own
weights are swapped in for its round and the shipped ones put back after.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from fedpeft.client.algorithm import ClientData, GradientClient, WrappedClient
from fedpeft.client.flops import FlopMeter
from fedpeft.client.local import train_adapter
from fedpeft.config import ClientSection
from fedpeft.messages import Instruction
from fedpeft.models.backbone import Backbone
from fedpeft.models.layer_plan import layer_weights
from fedpeft.seeding import stream
from fedpeft.types import ClientUpdate


@dataclass
class ModelStageClient(WrappedClient):
    """A :class:`GradientClient` on the auxiliary model with a model stage.

    Attributes:
        inner: The prompt stage (the ordinary gradient client).
        aux: The auxiliary model every client's adapter runs on.
        data_for: Client k's data.
        settings: The client section; the stage runs ``steps`` AdamW steps at
            its ``lr``.
        steps: Model-stage steps per round.
        seed: The run seed.
        precision: Backbone compute precision.
    """

    inner: GradientClient
    aux: Backbone
    data_for: Callable[[int], ClientData]
    settings: ClientSection
    steps: int
    seed: int
    precision: str = "fp32"
    _own: dict[int, list[torch.Tensor]] = field(default_factory=dict, repr=False)
    _meter: FlopMeter = field(default_factory=FlopMeter, repr=False)

    def __post_init__(self) -> None:
        self.weights = layer_weights(self.aux.model)
        self.shipped = [p.detach().clone() for p in self.weights]

    def fit(self, ins: Instruction) -> ClientUpdate:
        k = ins.client_id
        self._write(self._own.get(k, self.shipped))
        try:
            loss, flops = self._model_stage(ins)
            self._own[k] = [p.detach().clone() for p in self.weights]
            update = self.inner.fit(ins)
        finally:
            self._write(self.shipped)
        metrics = dict(update.metrics)
        metrics["model_stage_loss"] = loss
        metrics["flops"] = metrics.get("flops", 0.0) + flops
        return dataclasses.replace(update, metrics=metrics)

    def _model_stage(self, ins: Instruction) -> tuple[float, float]:
        """Train the layer weights with the round's prompt loaded and frozen."""
        model = self.inner.model_for(ins.shape)
        model.load_trainable_state(ins.payload)
        for p in self.weights:
            p.requires_grad_(True)
        try:
            optimizer = torch.optim.AdamW(self.weights, lr=self.settings.lr)
            stats = train_adapter(
                model,
                self.data_for(ins.client_id).train,
                self.settings.model_copy(update={"local_steps": self.steps}),
                stream(self.seed, "model-stage", ins.round, ins.client_id),
                precision=self.precision,
                flops=self._meter,
                optimizer=optimizer,
            )
        finally:
            for p in self.weights:
                p.requires_grad_(False)
            model.zero_grad(set_to_none=True)
        return stats.loss, float(stats.flops)

    def _write(self, values: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(self.weights, values, strict=True):
                p.copy_(v)

    # The warm-start tasks run on the shipped model (WrappedClient's).
    def can_batch(self, shape: tuple[int, int] | None) -> bool:
        return False  # each client trains its own model weights

    def fit_many(self, instructions: Sequence[Instruction]) -> list[ClientUpdate]:
        return [self.fit(ins) for ins in instructions]
