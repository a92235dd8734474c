"""Tests for fedpeft.privacy.dpsgd on tiny prompt-tuning-like models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedpeft.models.tokenized import Batch
from fedpeft.privacy.dpsgd import (
    batch_forward,
    clip_per_example,
    dp_sgd_step,
    per_example_grads,
    per_example_grads_loop,
    poisson_batches,
)

VOCAB, DIM, PROMPT, CLASSES, SEQ = 30, 8, 2, 3, 6


class TinyPromptClassifier(nn.Module):
    """Frozen embedding + frozen one-head self-attention, a trainable soft prompt
    and a trainable head: the shape of prompt tuning on a frozen encoder."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, DIM)
        self.q, self.k, self.v = (nn.Linear(DIM, DIM) for _ in range(3))
        for p in self.parameters():  # everything above is the frozen backbone
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            p.requires_grad_(False)
        self.prompt = nn.Parameter(torch.randn(PROMPT, DIM, generator=gen) * 0.5)
        self.head = nn.Linear(DIM, CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(CLASSES, DIM, generator=gen) * 0.5)
            self.head.bias.zero_()

    def logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        b = ids.shape[0]
        h = torch.cat([self.prompt.expand(b, PROMPT, DIM), self.embed(ids)], dim=1)
        keep = torch.cat([mask.new_ones(b, PROMPT), mask], dim=1).float()  # (B, L)
        scores = self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(DIM)  # (B, L, L)
        scores = scores + (1.0 - keep)[:, None, :] * -1e9
        out = torch.softmax(scores, dim=-1) @ self.v(h) + h  # (B, L, D)
        pooled = (out * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        logits: Tensor = self.head(pooled)
        return logits

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.logits(inputs["input_ids"], inputs["attention_mask"])


class TinyBatchClassifier(TinyPromptClassifier):
    """Same model with an AdapterClassifier-style ``forward(batch: Batch)``."""

    def forward(self, batch: Batch) -> Tensor:  # type: ignore[override]
        return self.logits(batch.input_ids, batch.attention_mask)


def _data(b: int, seed: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, SEQ), generator=gen)
    lengths = torch.randint(1, SEQ + 1, (b,), generator=gen)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, CLASSES, (b,), generator=gen)
    return {"input_ids": ids, "attention_mask": mask}, labels


def _loop_oracle(
    model: nn.Module, inputs: dict[str, Tensor], labels: Tensor
) -> dict[str, Tensor]:
    """Per-example gradients by B ordinary backward passes on the module."""
    rows: dict[str, list[Tensor]] = {}
    for i in range(labels.shape[0]):
        model.zero_grad()
        xi = {k: v[i : i + 1] for k, v in inputs.items()}
        F.cross_entropy(model(xi), labels[i : i + 1]).backward()  # type: ignore[no-untyped-call]
        for n, p in model.named_parameters():
            if p.requires_grad:
                rows.setdefault(n, []).append(p.grad.clone())  # type: ignore[union-attr]
    return {n: torch.stack(r) for n, r in rows.items()}


def test_vmap_per_example_grads_equal_single_example_loop() -> None:
    model = TinyPromptClassifier()
    inputs, labels = _data(7)
    grads = per_example_grads(model, F.cross_entropy, inputs, labels)
    expected = _loop_oracle(model, inputs, labels)
    assert set(grads) == {"prompt", "head.weight", "head.bias"}  # trainable only
    for name, g in expected.items():
        assert grads[name].shape == (7, *g.shape[1:])
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-5)


def test_loop_fallback_and_chunked_vmap_agree() -> None:
    model = TinyPromptClassifier()
    inputs, labels = _data(5)
    vmapped = per_example_grads(model, F.cross_entropy, inputs, labels, chunk_size=2)
    looped = per_example_grads_loop(model, F.cross_entropy, inputs, labels)
    for name in vmapped:
        torch.testing.assert_close(vmapped[name], looped[name], atol=1e-6, rtol=1e-5)


def test_batch_forward_plugs_in_a_batch_module() -> None:
    plain, batched = TinyPromptClassifier(), TinyBatchClassifier()
    inputs, labels = _data(4)
    a = per_example_grads(plain, F.cross_entropy, inputs, labels)
    b = per_example_grads(
        batched, F.cross_entropy, inputs, labels, forward=batch_forward(batched)
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_clipped_per_example_norms_at_most_c() -> None:
    model = TinyPromptClassifier()
    inputs, labels = _data(9)
    grads = per_example_grads(model, F.cross_entropy, inputs, labels)
    grads["head.bias"][0].zero_()
    grads["head.weight"][0].zero_()
    grads["prompt"][0].zero_()  # example 0: a zero gradient
    clipped, norms = clip_per_example(grads, 0.05)
    flat = torch.cat([g.flatten(1) for g in clipped.values()], dim=1).double()
    after = flat.norm(dim=1)
    assert norms[0] == 0 and torch.all(torch.isfinite(after))
    assert torch.all(after <= 0.05 * (1 + 1e-6))
    big = norms > 0.05
    torch.testing.assert_close(after[big], torch.full_like(after[big], 0.05))


def test_noiseless_unclipped_step_equals_plain_sgd() -> None:
    dp_model, plain = TinyPromptClassifier(), TinyPromptClassifier()
    inputs, labels = _data(8)
    dp_opt = torch.optim.SGD(
        [p for p in dp_model.parameters() if p.requires_grad], lr=0.5
    )
    opt = torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.5)
    dp_sgd_step(
        dp_model,
        dp_opt,
        inputs,
        labels,
        max_grad_norm=1e6,
        noise_multiplier=0.0,
        expected_batch_size=8.0,
        generator=None,
    )
    opt.zero_grad()
    F.cross_entropy(plain(inputs), labels).backward()  # type: ignore[no-untyped-call]
    opt.step()
    for (name, a), (_, b) in zip(
        dp_model.named_parameters(), plain.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def _noisy_step(seed: int | None, secure: bool = False) -> Tensor:
    model = TinyPromptClassifier()
    inputs, labels = _data(4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    dp_sgd_step(
        model,
        opt,
        inputs,
        labels,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        expected_batch_size=4.0,
        generator=gen,
        secure=secure,
    )
    return model.prompt.detach().clone()


def test_seeded_noise_reproducible_secure_noise_not() -> None:
    torch.testing.assert_close(_noisy_step(3), _noisy_step(3), atol=0, rtol=0)
    assert not torch.equal(_noisy_step(3), _noisy_step(4))
    assert not torch.equal(
        _noisy_step(None, secure=True), _noisy_step(None, secure=True)
    )
    with pytest.raises(ValueError, match="Generator"):
        _noisy_step(None)


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(100, 50)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.lin(x)
        return out


@pytest.mark.parametrize("secure", [False, True])
def test_empty_batch_takes_a_noise_only_step_with_sigma_c_over_qn(secure: bool) -> None:
    model = Wide()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = None if secure else torch.Generator().manual_seed(0)
    stats = dp_sgd_step(
        model,
        opt,
        torch.zeros(0, 100),
        torch.zeros(0, dtype=torch.long),
        max_grad_norm=0.5,
        noise_multiplier=2.0,
        expected_batch_size=4.0,
        generator=gen,
        secure=secure,
    )
    step = torch.cat([p.detach().reshape(-1) for p in model.parameters()])  # = -g̃
    assert stats.batch_size == 0 and stats.noise_std == pytest.approx(0.25)
    assert float(step.std()) == pytest.approx(2.0 * 0.5 / 4.0, rel=0.05)


def test_poisson_training_loop_runs() -> None:
    model = TinyPromptClassifier()
    inputs, labels = _data(40)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    sizes = []
    for idx in poisson_batches(40, 0.1, 5, np.random.default_rng(0)):
        rows = torch.from_numpy(idx)
        batch = {k: v[rows] for k, v in inputs.items()}
        stats = dp_sgd_step(
            model,
            opt,
            batch,
            labels[rows],
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=4.0,
            generator=gen,
        )
        sizes.append(stats.batch_size)
    assert len(sizes) == 5 and torch.all(torch.isfinite(model.prompt))


def test_step_arguments_validated() -> None:
    model = TinyPromptClassifier()
    inputs, labels = _data(2)
    opt = torch.optim.SGD([model.prompt], lr=0.1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        dp_sgd_step(
            model,
            opt,
            inputs,
            labels,
            max_grad_norm=0.0,
            noise_multiplier=1.0,
            expected_batch_size=2.0,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match="expected_batch_size"):
        dp_sgd_step(
            model,
            opt,
            inputs,
            labels,
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=0.0,
            generator=torch.Generator(),
        )
