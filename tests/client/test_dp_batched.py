"""Record-level DP-SGD with clients batched equals each client alone: same
Poisson batches, same noise draws, clipped per example, per-client AdamW."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpeft.client.batched import ClientJob
from fedpeft.client.dp_local import RecordDP, dp_train_adapter, dp_train_clients_batched
from fedpeft.experiment import Experiment
from tests.client.helpers import perturbed_starts


def _jobs(exp: Experiment, starts: list[dict[str, np.ndarray]]) -> list[ClientJob]:
    return [
        ClientJob(k, s, exp.clients[k].train, np.random.default_rng(10 + k))
        for k, s in enumerate(starts)
    ]


def _generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + k) for k in range(n)]


@pytest.mark.parametrize("bucket_size", [0, 8])
def test_batched_dp_sgd_matches_each_client_alone(
    tiny_experiment: Experiment, bucket_size: int
) -> None:
    exp = tiny_experiment
    # A small clip so that clipping binds, uneven shard sizes, weight decay.
    cfg = exp.config.client.model_copy(update={"batch_size": 8, "weight_decay": 0.01})
    dp = RecordDP(clip_norm=0.05, noise_multiplier=0.7, delta=1e-4)
    model = exp.new_adapter()
    base = model.trainable_state()
    starts = perturbed_starts(base, 3)
    batched = dp_train_clients_batched(
        model, _jobs(exp, starts), _generators(3), cfg, dp, bucket_size=bucket_size
    )
    for job, gen, (state, stats) in zip(
        _jobs(exp, starts), _generators(3), batched, strict=True
    ):
        alone = exp.new_adapter()
        alone.load_trainable_state(job.start)
        ref = dp_train_adapter(alone, job.data, cfg, dp, job.rng, gen)
        expected = alone.trainable_state()
        assert (stats.steps, stats.examples) == (ref.steps, ref.examples)
        for name in expected:
            moved = np.abs(expected[name] - job.start[name]).max()
            assert moved > 1e-4, name
            np.testing.assert_allclose(
                state[name], expected[name], atol=2e-5 * max(1, moved)
            )
    for name, value in model.trainable_state().items():  # the model is untouched
        np.testing.assert_array_equal(value, base[name])


def test_refuses_a_generator_count_that_does_not_fit(
    tiny_experiment: Experiment,
) -> None:
    model = tiny_experiment.new_adapter()
    start = model.trainable_state()
    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, delta=1e-4)
    with pytest.raises(ValueError, match="1 noise generators for 2 clients"):
        dp_train_clients_batched(
            model,
            _jobs(tiny_experiment, [start, start]),
            _generators(1),
            tiny_experiment.config.client,
            dp,
        )
