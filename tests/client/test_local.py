"""Local training: step counts, the FedProx term, the update's meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpeft.client.local import _proximal_term, local_update
from fedpeft.client.steps import batch_orders
from fedpeft.seeding import stream

pytestmark = pytest.mark.slow


def test_batch_orders_cover_epochs_or_fixed_steps() -> None:
    rng = np.random.default_rng(0)
    epochs = list(batch_orders(10, 4, epochs=2, steps=0, rng=rng))
    assert [len(b) for b in epochs] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(epochs[:3])) == list(range(10))
    steps = list(batch_orders(10, 4, epochs=99, steps=5, rng=rng))
    assert len(steps) == 5


def test_proximal_term_is_squared_l2_distance(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    model = tiny_experiment.new_adapter()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.prompt.add_(0.5)  # every prompt entry moves by 0.5
    expected = 0.25 * model.prompt.numel()
    assert float(_proximal_term(model, anchor).detach()) == pytest.approx(
        expected, rel=1e-5
    )


def test_update_is_local_minus_global_and_prox_shrinks_it(tiny_experiment) -> None:  # type: ignore[no-untyped-def]
    exp = tiny_experiment
    model = exp.new_adapter()
    start = model.trainable_state()
    client = exp.clients[0]
    cfg = exp.config.client.model_copy(update={"local_epochs": 2})
    plain = local_update(
        0, model, start, client.train, client.val, cfg, stream(0, "client", 1, 0)
    )
    local = model.trainable_state()
    for key in start:
        np.testing.assert_allclose(plain.delta[key], local[key] - start[key], atol=1e-7)
    assert plain.num_examples == len(client.train)
    assert plain.metrics["train_examples"] == 2 * len(client.train)
    assert plain.metrics["flops"] > 0
    prox = local_update(
        0,
        model,
        start,
        client.train,
        client.val,
        cfg,
        stream(0, "client", 1, 0),
        proximal_mu=100.0,
    )

    def norm(d: dict) -> float:  # type: ignore[type-arg]
        return float(np.sqrt(sum((v**2).sum() for v in d.values())))

    assert norm(prox.delta) < norm(plain.delta)
