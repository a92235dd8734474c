"""FedSP's server-side step: after aggregating the clients' prompts (tuned on
the auxiliary model), the server tunes the prompt on the full model with
labeled data of its own and sends that back (Dong et al. 2023; in their code
the server holds one more shard of the task's training data, as if it were a
client, and trains the prompt on it every round)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedpeft.client.local import train_adapter
from fedpeft.config import ClientSection
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.seeding import stream
from fedpeft.server.aggregators import Metrics
from fedpeft.server.wrapped import WrappedServer
from fedpeft.types import ClientUpdate, Params


@dataclass
class ServerPromptStep:
    """Tunes a global state on the full model.

    Attributes:
        model: The server's adapter on the full model.
        data: The server's labeled shard.
        settings: Local-training settings for it (``local_steps`` steps).
        seed: The run seed (batches drawn per round).
        precision: Backbone compute precision.
    """

    model: AdapterClassifier
    data: TokenizedDataset
    settings: ClientSection
    seed: int
    precision: str = "fp32"

    def __call__(self, rnd: int, params: Params) -> tuple[Params, Metrics]:
        self.model.load_trainable_state(params)
        stats = train_adapter(
            self.model,
            self.data,
            self.settings,
            stream(self.seed, "server", rnd),
            precision=self.precision,
        )
        return self.model.trainable_state(), {
            "server_step_loss": stats.loss,
            "server_step_flops": float(stats.flops),
        }


@dataclass
class SteppedServer(WrappedServer):
    """A server whose merged state then takes :class:`ServerPromptStep`."""

    step: ServerPromptStep

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        merged, metrics = self.inner.merge(rnd, params, updates)
        stepped, extra = self.step(rnd, merged)
        return stepped, {**metrics, **extra}
