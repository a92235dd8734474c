"""Record-level DP-SGD inside a client (Abadi et al. 2016, Algorithm 1).

Per-example gradients come from one forward/backward pass: every example gets
its own copy of each trainable tensor (prompt ``(B, L, d)``, head ``(B, C, d)``),
the per-example losses are summed, and the gradient w.r.t. copy i is example
i's gradient. (torch.func's vmap cannot trace the Hugging Face attention-mask
code; a loop over examples would cost B passes.) Each step: Poisson batch with
rate q = batch_size / n, clip each example's gradient to C, add N(0, σ²C²) to
the sum, divide by the expected batch size q·n, AdamW step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.local import LocalTrainStats, build_optimizer
from fedpeft.config import ClientSection
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.privacy.dpsgd import clip_per_example
from fedpeft.privacy.noise import secure_standard_normal
from fedpeft.privacy.sampling import poisson_batches


@dataclass(frozen=True)
class RecordDP:
    """Resolved record-level DP-SGD settings of a run."""

    clip_norm: float
    noise_multiplier: float
    delta: float
    accountant: str = "rdp"
    secure: bool = False


def dp_plan(n: int, cfg: ClientSection) -> tuple[float, int]:
    """``(q, steps)`` of one participation: Poisson rate batch/n and the number
    of steps (``local_steps``, or ``local_epochs`` passes of n/batch)."""
    q = min(1.0, cfg.batch_size / n)
    steps = cfg.local_steps or cfg.local_epochs * math.ceil(n / cfg.batch_size)
    return q, steps


def per_example_grads(
    model: AdapterClassifier, data: TokenizedDataset, idx: np.ndarray, precision: str
) -> dict[str, torch.Tensor]:
    """``{name: (B, *shape)}`` gradients of each example's loss (one backward)."""
    batch = data.batch(idx, model.device)
    copies = {
        name: p.detach()
        .unsqueeze(0)
        .expand(len(batch), *p.shape)
        .clone()
        .requires_grad_()
        for name, p in model.trainable_parameters().items()
    }
    with autocast(precision, model.device):
        logits = model.per_example_logits(batch, copies)
    loss = F.cross_entropy(logits.float(), batch.labels, reduction="sum")
    grads = torch.autograd.grad(loss, list(copies.values()))
    return dict(zip(copies, grads, strict=True))


def dp_train_adapter(
    model: AdapterClassifier,
    data: TokenizedDataset,
    cfg: ClientSection,
    dp: RecordDP,
    rng: np.random.Generator,
    generator: torch.Generator,
    precision: str = "fp32",
) -> LocalTrainStats:
    """DP-SGD (with AdamW on the privatized gradient) on ``model`` in place.

    An empty Poisson batch still takes a noise-only step, as the accounting
    assumes.
    """
    n = len(data)
    q, steps = dp_plan(n, cfg)
    optimizer = build_optimizer(model, cfg)
    params = model.trainable_parameters()
    std = dp.noise_multiplier * dp.clip_norm
    started, examples = time.perf_counter(), 0
    for idx in poisson_batches(n, q, steps, rng):
        noisy: dict[str, torch.Tensor] = {}
        if len(idx):
            grads, _ = clip_per_example(
                per_example_grads(model, data, idx, precision), dp.clip_norm
            )
            noisy = {k: g.sum(dim=0) for k, g in grads.items()}
        for name, p in params.items():
            total = noisy.get(name, torch.zeros_like(p))
            noise = _noise(p.shape, generator, dp.secure).to(p.device) * std
            p.grad = ((total + noise) / (q * n)).to(p.dtype)
        optimizer.step()
        examples += len(idx)
    return LocalTrainStats(
        float("nan"), steps, examples, 0, time.perf_counter() - started
    )


def _noise(shape: torch.Size, generator: torch.Generator, secure: bool) -> torch.Tensor:
    """Standard normal draws on the CPU: seeded, or from OS entropy in secure
    mode."""
    if secure:
        draws = secure_standard_normal(math.prod(shape))
        return torch.from_numpy(draws).float().reshape(shape)
    return torch.randn(shape, generator=generator)
