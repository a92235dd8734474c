"""The run's feature cache: a hit is the computation it stands for, to the
bit, and the baselines' warm starts reuse the federated one's features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedpeft.baselines.centralized import run_centralized
from fedpeft.client.feature_cache import FeatureCache, compute_features
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.peft.prompt.model import SoftPromptClassifier


def test_a_hit_equals_the_computation_and_any_change_misses(
    tiny_experiment: Experiment,
) -> None:
    exp = tiny_experiment
    model = exp.new_adapter()
    data = exp.clients[0].train
    cache = FeatureCache()
    first = cache.features(model, data, 16, "fp32")
    again = cache.features(model, data, 16, "fp32")
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(again, first)
    assert torch.equal(first, compute_features(model, data, 16, "fp32"))
    again.zero_()  # the caller's copy: the cache keeps its own
    assert torch.equal(cache.features(model, data, 16, "fp32"), first)

    # what the features depend on is in the key: each of these misses
    cache.features(model, data, 8, "fp32")  # other batches
    cache.features(model, exp.clients[1].train, 16, "fp32")  # other data
    other = exp.new_adapter(exp.config.peft.replace(prompt_length=2))
    cache.features(other, data, 16, "fp32")  # other options
    state = model.trainable_state()
    model.load_trainable_state({**state, "head.bias": state["head.bias"] + 1.0})
    cache.features(model, data, 16, "fp32")  # the head: not a feature, a hit
    assert (cache.hits, cache.misses) == (3, 4)
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_trainable_state({**state, **{k: v + 0.5 for k, v in body.items()}})
    moved = cache.features(model, data, 16, "fp32")
    assert cache.misses == 5
    assert not torch.equal(moved, first)


def test_adapters_without_their_options_and_entries_over_the_bound_are_not_kept(
    tiny_experiment: Experiment,
) -> None:
    exp = tiny_experiment
    data = exp.clients[0].train
    bare = SoftPromptClassifier(
        exp.backbone,
        exp.num_classes,
        prompt_length=4,
        generator=torch.Generator().manual_seed(0),
    )
    cache = FeatureCache()
    cache.features(bare, data, 16, "fp32")
    cache.features(bare, data, 16, "fp32")
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)

    model = exp.new_adapter()
    one, two = data, exp.clients[1].train
    small = FeatureCache(
        max_bytes=max(len(one), len(two)) * 4 * exp.backbone.hidden_size
    )
    small.features(model, one, 16, "fp32")
    assert len(small) == 1
    small.features(model, two, 16, "fp32")
    assert len(small) == 1  # the least recently used went
    small.features(model, one, 16, "fp32")
    assert small.misses == 3
    small.features(model, exp.train, 16, "fp32")  # over the bound alone
    assert len(small) == 1  # not kept, and the others stay
    tiny = FeatureCache(max_bytes=16)
    tiny.features(model, one, 16, "fp32")
    assert len(tiny) == 0 and tiny.nbytes == 0


@pytest.mark.slow
def test_the_centralized_baseline_reuses_the_federated_warm_start(
    tiny_experiment: Experiment,
) -> None:
    """After a federated run the centralized warm start computes no features
    (every client's shard is a hit), and its result equals a cold run's to the
    bit: the pool is read as the clients' shards either way."""
    warm = dataclasses.replace(tiny_experiment)  # a fresh, empty cache
    FederatedRun(warm).run()
    hits, misses = warm.features.hits, warm.features.misses
    assert misses == len(warm.clients)  # one pass of features per client
    after_federated = run_centralized(warm, budget_examples=32, rounds=1)
    assert warm.features.hits - hits == len(warm.clients)
    assert warm.features.misses == misses

    cold = dataclasses.replace(tiny_experiment)
    alone = run_centralized(cold, budget_examples=32, rounds=1)
    assert cold.features.misses == len(cold.clients)
    assert after_federated == alone
