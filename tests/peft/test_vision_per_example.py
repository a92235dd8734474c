"""The image adapters' per-example forward: each example computes with its own
copy of the trainable tensors, so image clients train batched and under
record-level DP-SGD exactly as they do alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedpeft.client.batched import (
    ClientJob,
    concat_batches,
    sub_batch,
    supports_batching,
    train_clients_batched,
)
from fedpeft.client.dp_local import RecordDP, dp_train_adapter, dp_train_clients_batched
from fedpeft.client.local import train_adapter
from fedpeft.config import ConfigError, load_config
from fedpeft.experiment import Experiment, check_names
from fedpeft.seeding import stream
from tests.client.helpers import check_per_example_forward, perturbed_starts
from tests.conftest import needs_fashion_mnist
from tests.peft.conftest import IMAGES

pytestmark = needs_fashion_mnist

PER_EXAMPLE = [
    ("head", {}),
    ("visual-prompt", {"pad": 3}),
    ("bitfit", {}),
    ("bitfit", {"layers": 2}),
    ("lora", {"rank": 4}),
    ("lora", {"rank": 2, "layers": 3}),
]


@pytest.mark.parametrize(("method", "options"), PER_EXAMPLE)
def test_per_example_forward_selects_each_examples_adapter(
    images: Experiment, method: str, options: dict[str, int]
) -> None:
    batch = images.clients[0].train.batch(np.arange(6))
    models = [images.new_adapter(method, **options) for _ in range(2)]
    assert supports_batching(models[0])
    check_per_example_forward(models, batch, atol=1e-4)


@pytest.mark.parametrize("method", ["bitfit", "lora"])
def test_per_example_gradients_are_each_examples_own(
    images: Experiment, method: str
) -> None:
    """The gradient w.r.t. example i's copy equals the gradient of example i's
    loss alone: no example leaks into another's (the batch norms stay in
    eval mode), which record-level DP's clipping relies on."""
    model = images.new_adapter(method)
    model.load_trainable_state(perturbed_starts(model.trainable_state(), 1)[0])
    batch = images.clients[0].train.batch(np.arange(4))
    names = list(model.trainable_parameters())
    copies = {
        n: model.trainable_parameters()[n].detach().expand(4, *t.shape).clone()
        for n, t in model.trainable_parameters().items()
    }
    for c in copies.values():
        c.requires_grad_()
    with model.per_example_session():
        logits = model.per_example_logits(batch, copies)
    loss = torch.nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
    grads = torch.autograd.grad(loss, list(copies.values()))
    for i in range(4):
        one = images.clients[0].train.batch(np.array([i]))
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(one), one.labels).backward()
        params = model.trainable_parameters()
        for name, grad in zip(names, grads, strict=True):
            torch.testing.assert_close(
                grad[i],
                params[name].grad,
                rtol=1e-3,
                atol=2e-5,
                msg=lambda m, name=name: f"{name}: {m}",
            )


def test_image_batches_concatenate_and_split_whole(images: Experiment) -> None:
    """Client batching joins and splits batches along the batch axis only: a
    text batch's sequence trimming must not crop an image to one row."""
    data = images.clients[0].train
    a, b = data.batch(np.arange(3)), data.batch(np.arange(3, 5))
    both = concat_batches([a, b])
    assert both.input_ids.shape == (5, *a.input_ids.shape[1:])
    assert torch.equal(both.input_ids, torch.cat([a.input_ids, b.input_ids]))
    part = sub_batch(both, torch.tensor([4, 0]))
    assert torch.equal(part.input_ids, both.input_ids[[4, 0]])
    assert part.attention_mask.shape == (2, 1)


def _jobs(exp: Experiment, starts: list[dict[str, np.ndarray]]) -> list[ClientJob]:
    data = [exp.clients[k].train.subset(np.arange(40 - 9 * k)) for k in range(3)]
    return [
        ClientJob(k, starts[k], data[k], stream(0, "client", 1, k)) for k in range(3)
    ]


# Float noise amplified, not wrong gradients (stop 35): on an AVX2-only CPU (AMD
# EPYC, Zen 1) batched LoRA image clients drift from the same clients trained
# alone by up to half their total update after 5 steps (loss 1.3e-4 relative),
# though one step's gradients agree to 7.9e-7 (ad-hoc; per example:
# test_per_example_gradients_are_each_examples_own[lora]). Adam moves every
# coordinate by about lr whatever its gradient's size, so coordinates whose
# gradient is at the 1e-7 noise level of the two conv paths move differently;
# with AVX512/AMX kernels the noise stays below that and the test passes.
# strict: it fails once the drift is gone here. Left to do: a check that does
# not depend on the CPU's kernels (e.g. SGD, or equal gradients step by step).
AVX2_LORA_DRIFT = pytest.mark.xfail(
    torch.backends.cpu.get_cpu_capability() == "AVX2",
    reason="Adam amplifies the conv paths' 1e-7 float noise on AVX2 CPUs",
    strict=True,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["visual-prompt", "bitfit", pytest.param("lora", marks=AVX2_LORA_DRIFT)]
)
def test_batched_image_clients_match_sequential_clients(
    images: Experiment, method: str
) -> None:
    cfg = images.config.client.model_copy(
        update={"batch_size": 8, "lr": 1e-3, "loss": "cross-entropy"}
    )
    model = images.new_adapter(method)
    base = model.trainable_state()
    starts = perturbed_starts(base, 3)
    batched = train_clients_batched(
        model, _jobs(images, starts), cfg, proximal_mu=0.5, bucket_size=0
    )
    for job, (state, stats) in zip(_jobs(images, starts), batched, strict=True):
        alone = images.new_adapter(method)
        alone.load_trainable_state(job.start)
        ref = train_adapter(alone, job.data, cfg, job.rng, proximal_mu=0.5)
        assert (stats.steps, stats.examples) == (ref.steps, ref.examples)
        assert stats.loss == pytest.approx(ref.loss, rel=1e-4)
        expected = alone.trainable_state()
        for name in expected:
            moved = np.abs(expected[name] - job.start[name]).max()
            assert moved > 1e-4, name
            diff = np.abs(state[name] - expected[name])
            # Adam rescales near-zero gradients: a few coordinates may differ
            # by part of a step after summing in another order.
            allowed = int(max(2, 1e-3 * diff.size))
            assert (diff > 2e-5 + 1e-4 * np.abs(expected[name])).sum() <= allowed
            assert diff.max() <= max(cfg.lr, cfg.head_lr) * stats.steps, name
    for name, value in model.trainable_state().items():
        np.testing.assert_array_equal(value, base[name])


@pytest.mark.slow
def test_batched_image_dp_sgd_matches_each_client_alone(images: Experiment) -> None:
    cfg = images.config.client.model_copy(update={"batch_size": 8})
    dp = RecordDP(clip_norm=0.05, noise_multiplier=0.7, delta=1e-4)
    model = images.new_adapter("lora", rank=2)
    starts = perturbed_starts(model.trainable_state(), 3)

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + k) for k in range(3)]

    batched = dp_train_clients_batched(
        model, _jobs(images, starts), generators(), cfg, dp
    )
    for job, gen, (state, stats) in zip(
        _jobs(images, starts), generators(), batched, strict=True
    ):
        alone = images.new_adapter("lora", rank=2)
        alone.load_trainable_state(job.start)
        ref = dp_train_adapter(alone, job.data, cfg, dp, job.rng, gen)
        assert (stats.steps, stats.examples) == (ref.steps, ref.examples)
        for name, expected in alone.trainable_state().items():
            moved = np.abs(expected - job.start[name]).max()
            assert moved > 1e-4, name
            np.testing.assert_allclose(state[name], expected, atol=2e-5 * max(1, moved))


def test_record_dp_is_refused_only_where_it_cannot_run(tmp_path: Path) -> None:
    def check(*extra: str) -> None:
        check_names(
            load_config(
                None,
                [
                    *extra,
                    "privacy.record_dp.noise_multiplier=1.0",
                    f"output_dir={tmp_path}",
                ],
            )
        )

    for method in ("head", "visual-prompt", "bitfit", "lora"):
        check(*IMAGES, f"peft.method={method}")
    for method in ("prompt", "prefix", "lora", "ia3", "bitfit", "head"):
        check(f"peft.method={method}")
    for backbone in (IMAGES, ()):
        with pytest.raises(ConfigError, match=r"no per-example forward"):
            check(*backbone, "peft.method=full")
    with pytest.raises(ConfigError, match=r"without gradients"):
        check("peft.method=blackbox")
