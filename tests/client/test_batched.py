"""Client-batched training equals training the clients one after another."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpeft.client.batched import (
    ClientJob,
    concat_batches,
    length_buckets,
    supports_batching,
    train_clients_batched,
)
from fedpeft.client.local import train_adapter
from fedpeft.client.stacked_adamw import StackedAdamW
from fedpeft.experiment import Experiment
from fedpeft.seeding import stream
from tests.client.helpers import check_per_example_forward, perturbed_starts

pytestmark = pytest.mark.slow


def _jobs(exp: Experiment, starts: list[dict[str, np.ndarray]]) -> list[ClientJob]:
    # Uneven sizes: the clients run out of batches at different steps.
    sizes = [len(exp.clients[k].train) for k in range(3)]
    data = [exp.clients[k].train.subset(np.arange(sizes[k] - 7 * k)) for k in range(3)]
    return [
        ClientJob(k, starts[k], data[k], stream(0, "client", 1, k)) for k in range(3)
    ]


@pytest.mark.parametrize(
    ("method", "options", "bucket_size", "threads"),
    [
        ("prompt", {"local_epochs": 2}, 0, 1),
        (
            "prompt",
            {"local_epochs": 1, "max_grad_norm": 0.05, "weight_decay": 0.1},
            7,
            2,
        ),
        ("lora", {"local_epochs": 1, "max_grad_norm": 0.5}, 7, 2),
        ("prefix", {"local_epochs": 1}, 7, 2),
        ("ia3", {"local_epochs": 1, "max_grad_norm": 0.5}, 7, 2),
        ("bitfit", {"local_epochs": 1, "weight_decay": 0.1}, 7, 2),
    ],
)
def test_batched_clients_match_sequential_clients(
    tiny_experiment: Experiment,
    method: str,
    options: dict[str, float],
    bucket_size: int,
    threads: int,
) -> None:
    exp = tiny_experiment
    cfg = exp.config.client.model_copy(update={"batch_size": 8, **options})
    model = exp.new_adapter(method)
    base = model.trainable_state()
    starts = perturbed_starts(base, 3)
    batched = train_clients_batched(
        model,
        _jobs(exp, starts),
        cfg,
        proximal_mu=0.5,
        bucket_size=bucket_size,
        bucket_threads=threads,
    )
    for job, (state, stats) in zip(_jobs(exp, starts), batched, strict=True):
        alone = exp.new_adapter(method)
        alone.load_trainable_state(job.start)
        ref = train_adapter(alone, job.data, cfg, job.rng, proximal_mu=0.5)
        expected = alone.trainable_state()
        assert stats.steps == ref.steps and stats.examples == ref.examples
        assert stats.loss == pytest.approx(ref.loss, rel=1e-4)
        step = max(cfg.lr, cfg.head_lr)  # Adam moves a coordinate ~lr a step
        for name in expected:
            if name.endswith("attention.self.key.bias"):
                # Adding b to every key adds q·b to every score of a query:
                # softmax ignores it, so this gradient is exactly 0 in
                # exact arithmetic and float noise here, which Adam scales
                # up to steps of ~lr in either engine.
                continue
            if ".pooler." in name:  # off the path of mean pooling: only
                # FedProx's pull and weight decay move it, in both engines
                np.testing.assert_allclose(state[name], expected[name], atol=1e-7)
                continue
            moved = np.abs(expected[name] - job.start[name]).max()
            assert moved > 1e-4, name  # training did something to compare
            diff = np.abs(state[name] - expected[name])
            tight = 2e-5 * max(1.0, moved) + 1e-4 * np.abs(expected[name])
            # Adam divides each coordinate's gradient by its own running
            # scale, so summing in another order can shift a coordinate with a
            # near-zero gradient by a small part of a step (seen on one of
            # 3,072 LoRA coordinates and one of 384 BitFit biases, on one
            # host's kernels): a few such coordinates may exceed the tight
            # bound, none by much.
            allowed = int(max(2, 1e-3 * diff.size))
            assert (diff > tight).sum() <= allowed, name
            # Beyond those few coordinates every one is within 5% of a step;
            # they themselves (a near-zero gradient that Adam rescales) within
            # one step per local step.
            assert np.sort(diff, axis=None)[-allowed - 1] <= 0.05 * step, name
            assert diff.max() <= step * stats.steps, name
    # The model's own tensors are untouched.
    for name, value in model.trainable_state().items():
        np.testing.assert_array_equal(value, base[name])


def test_stacked_adamw_matches_torch_adamw_per_client() -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, generator=gen)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(4)]
    active = [
        torch.tensor([True, True, True]),
        torch.tensor([True, False, True]),
        torch.tensor([False, False, True]),
        torch.tensor([True, True, True]),
    ]
    stacked = start.clone()
    opt = StackedAdamW({"w": stacked}, {"w": 0.1}, weight_decay=0.01)
    for g, on in zip(grads, active, strict=True):
        opt.step({"w": g}, on)
    for k in range(3):
        p = torch.nn.Parameter(start[k].clone())
        ref = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
        for g, on in zip(grads, active, strict=True):
            if on[k]:
                p.grad = g[k].clone()
                ref.step()
        torch.testing.assert_close(stacked[k], p.detach(), rtol=1e-6, atol=1e-7)


def test_concat_pads_to_the_longest(tiny_experiment: Experiment) -> None:
    data = tiny_experiment.clients[0].train
    order = np.argsort(data.lengths)
    short, long = data.batch(order[:2]), data.batch(order[-2:])
    both = concat_batches([short, long])
    assert both.input_ids.shape == (4, long.input_ids.shape[1])
    assert both.attention_mask[:2].sum() == short.attention_mask.sum()
    assert torch.equal(both.labels, torch.cat([short.labels, long.labels]))


def test_refuses_methods_without_a_per_example_forward(
    tiny_experiment: Experiment,
) -> None:
    full = tiny_experiment.new_adapter("full")
    assert not supports_batching(full)
    for method in ("prompt", "prefix", "lora", "ia3", "bitfit"):
        assert supports_batching(tiny_experiment.new_adapter(method)), method
    with pytest.raises(ValueError, match="one after another"):
        train_clients_batched(full, [], tiny_experiment.config.client)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("lora", {"rank": 4}),
        ("prefix", {}),
        ("prefix", {"prefix_projection": True}),
        ("ia3", {}),
        ("bitfit", {}),
    ],
)
def test_per_example_forward_selects_each_examples_adapter(
    tiny_experiment: Experiment, method: str, options: dict[str, object]
) -> None:
    exp = tiny_experiment
    batch = exp.clients[0].train.batch(np.arange(6))
    models = [exp.new_adapter(method, **options) for _ in range(2)]
    check_per_example_forward(models, batch, atol=1e-5)


def test_length_buckets_sort_and_cover() -> None:
    lengths = torch.tensor([5, 1, 9, 3, 7, 2, 8])
    groups = length_buckets(lengths, 3)
    assert [len(g) for g in groups] == [3, 2, 2]
    assert sorted(torch.cat(groups).tolist()) == list(range(7))
    flat = lengths[torch.cat(groups)]
    assert torch.equal(flat, torch.sort(lengths).values)
    assert [len(g) for g in length_buckets(lengths, 0)] == [7]


@pytest.mark.parametrize("method", ["prompt", "lora", "ia3", "bitfit"])
def test_threaded_buckets_give_bit_identical_results(
    tiny_experiment: Experiment, method: str
) -> None:
    exp = tiny_experiment
    cfg = exp.config.client.model_copy(update={"batch_size": 8})
    model = exp.new_adapter(method)
    rng = np.random.default_rng(1)
    starts = [  # different clients (LoRA: non-zero B), so a mix-up shows
        {
            n: (v + 0.05 * rng.normal(size=v.shape)).astype(np.float32)
            for n, v in model.trainable_state().items()
        }
        for _ in range(3)
    ]
    runs = [
        train_clients_batched(
            model, _jobs(exp, starts), cfg, bucket_size=4, bucket_threads=threads
        )
        for threads in (1, 2, 2)
    ]
    for other in runs[1:]:
        for (a, _), (b, _) in zip(runs[0], other, strict=True):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
