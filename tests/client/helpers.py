"""Shared pieces of the client-batching tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


def perturbed_starts(base: Params, count: int, seed: int = 3) -> list[Params]:
    """``count`` start states near ``base`` (one per client), so that clients
    start apart and a mixed-up client shows."""
    rng = np.random.default_rng(seed)
    return [
        {
            n: (v + 0.01 * rng.normal(size=v.shape)).astype(np.float32)
            for n, v in base.items()
        }
        for _ in range(count)
    ]


def check_per_example_forward(
    models: Sequence[AdapterClassifier], batch: Batch, atol: float
) -> None:
    """Move the models' trainable states apart (seeded; LoRA's B starts at
    zero), then check that ``models[0]``'s per-example forward, each example
    with the tensors of the model it is assigned to, gives each model's own
    logits, and that afterwards its plain forward is back (hooks removed)."""
    rng = np.random.default_rng(0)
    for m in models:
        m.load_trainable_state(
            {
                k: (v + rng.normal(scale=0.05, size=v.shape)).astype(np.float32)
                for k, v in m.trainable_state().items()
            }
        )
    owner = torch.arange(len(batch)) % len(models)
    states = [m.trainable_parameters() for m in models]
    params = {n: torch.stack([s[n].detach() for s in states])[owner] for n in states[0]}
    with torch.no_grad():
        mixed = models[0].per_example_logits(batch, params)
        alone = [m(batch) for m in models]
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the check can fail
    expected = torch.stack([alone[int(o)][i] for i, o in enumerate(owner)])
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=atol)
    with torch.no_grad():
        torch.testing.assert_close(models[0](batch), alone[0])
