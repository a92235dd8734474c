"""Sequential training over length buckets (the centralized baseline's path)
takes the same steps as training on one padded batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpeft.client.flops import FlopMeter
from fedpeft.client.label_skew import LogitAdjust
from fedpeft.client.local import train_adapter
from fedpeft.experiment import Experiment
from fedpeft.seeding import stream
from tests.client.helpers import perturbed_starts

pytestmark = pytest.mark.slow


def _one_step(
    exp: Experiment, method: str, buckets: int, threads: int, adjust: bool
) -> tuple[float, dict[str, torch.Tensor], int]:
    """Loss, gradient and counted FLOPs of one 8-example step, from a seeded
    start off the initial state (LoRA's B starts at zero, and with it A's
    gradient)."""
    cfg = exp.config.client.model_copy(update={"batch_size": 8, "local_steps": 1})
    model = exp.new_adapter(method)
    model.load_trainable_state(perturbed_starts(model.trainable_state(), 1)[0])
    classes = model.head.out_features
    logit_map = (
        LogitAdjust(torch.full((classes,), 0.7), torch.linspace(-1, 1, classes))
        if adjust
        else None
    )
    meter = FlopMeter()
    stats = train_adapter(
        model,
        exp.clients[0].train,
        cfg,
        stream(0, "baseline", 7),
        proximal_mu=0.5,
        flops=meter,
        adjust=logit_map,
        bucket_size=buckets,
        bucket_threads=threads,
    )
    grads = {
        n: p.grad.detach().clone()
        for n, p in model.trainable_parameters().items()
        if p.grad is not None
    }
    return stats.loss, grads, stats.flops


@pytest.mark.parametrize(
    ("method", "threads", "adjust"),
    [
        ("prompt", 2, True),
        ("prompt", 1, False),
        ("lora", 2, False),
        ("prefix", 2, True),
    ],
)
def test_buckets_give_the_padded_batchs_loss_and_gradient(
    tiny_experiment: Experiment, method: str, threads: int, adjust: bool
) -> None:
    loss, grads, flops = _one_step(tiny_experiment, method, 0, 1, adjust)
    b_loss, b_grads, b_flops = _one_step(tiny_experiment, method, 3, threads, adjust)
    assert b_loss == pytest.approx(loss, rel=1e-5)
    assert sorted(b_grads) == sorted(grads)
    for name, grad in grads.items():
        assert float(grad.abs().max()) > 0, name  # a gradient to compare
        torch.testing.assert_close(b_grads[name], grad, rtol=1e-4, atol=1e-6)
    assert 0 < b_flops <= flops  # padding is computed less, never more


def test_a_method_without_a_per_example_forward_ignores_buckets(
    tiny_experiment: Experiment,
) -> None:
    loss, grads, _ = _one_step(tiny_experiment, "full", 0, 1, False)
    b_loss, b_grads, _ = _one_step(tiny_experiment, "full", 3, 2, False)
    assert b_loss == loss
    for name, grad in grads.items():
        assert torch.equal(b_grads[name], grad), name


def test_centralized_baseline_is_deterministic_with_bucket_threads(
    tiny_experiment: Experiment,
) -> None:
    from fedpeft.baselines.centralized import run_centralized

    exp = tiny_experiment
    assert exp.config.federation.bucket_threads > 1
    first, second = (run_centralized(exp, 64, 2) for _ in range(2))
    assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]
    assert [r.get("train_loss") for r in first] == [r.get("train_loss") for r in second]
    assert np.isfinite(first[-1]["train_loss"])
