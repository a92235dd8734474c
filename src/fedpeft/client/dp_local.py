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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.batched import (
    ClientJob,
    check_jobs,
    length_buckets,
    shared_batch,
    sub_batch,
    unstack,
)
from fedpeft.client.stacked_adamw import stacked_adamw
from fedpeft.client.steps import LocalTrainStats, build_optimizer
from fedpeft.config import ClientSection
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.privacy.dpsgd import clip_per_example, gaussian_noise
from fedpeft.privacy.sampling import poisson_batches
from fedpeft.types import Params


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
            noise = gaussian_noise(p.shape, std, generator, secure=dp.secure)
            p.grad = ((total + noise.to(p.device)) / (q * n)).to(p.dtype)
        optimizer.step()
        examples += len(idx)
    return LocalTrainStats(
        float("nan"), steps, examples, 0, time.perf_counter() - started
    )


def dp_train_clients_batched(
    model: AdapterClassifier,
    jobs: Sequence[ClientJob],
    generators: Sequence[torch.Generator],
    cfg: ClientSection,
    dp: RecordDP,
    precision: str = "fp32",
    bucket_size: int = 0,
) -> list[tuple[Params, LocalTrainStats]]:
    """:func:`dp_train_adapter` for several clients at once, as
    :func:`~fedpeft.client.batched.train_clients_batched` does for plain
    training: at step t every client still training draws its own Poisson
    batch (from its own ``rng``), the batches run through one per-example
    forward/backward (each example with its client's copy of the tensors, so
    the gradient w.r.t. that copy is the example's own), each example's
    gradient is clipped, each client sums its own and adds noise from its own
    ``generators[k]`` (same draws, in the same order, as alone), and
    :class:`~fedpeft.client.stacked_adamw.StackedAdamW` steps every client that
    took a step, an empty batch included (a noise-only step).

    Returns:
        Per job: the trained state and its statistics (no FLOP count, as
        :func:`dp_train_adapter`; seconds split by examples).

    Raises:
        ValueError: if the model has no per-example forward, or a job has no
            data or no generator.
    """
    check_jobs(model, jobs)
    if len(generators) != len(jobs):
        raise ValueError(f"{len(generators)} noise generators for {len(jobs)} clients")
    if not jobs:
        return []
    device, k_total = model.device, len(jobs)
    names = list(model.trainable_parameters())
    stacked = model.stack_states([j.start for j in jobs])
    optimizer = stacked_adamw(model, stacked, cfg)
    plans = [dp_plan(len(j.data), cfg) for j in jobs]
    draws = [
        poisson_batches(len(j.data), q, steps, j.rng)
        for j, (q, steps) in zip(jobs, plans, strict=True)
    ]
    std = dp.noise_multiplier * dp.clip_norm
    examples = np.zeros(k_total)
    started = time.perf_counter()
    with model.per_example_session():
        for t in range(max(steps for _, steps in plans)):
            active = [k for k in range(k_total) if t < plans[k][1]]
            picks = {k: next(draws[k]) for k in active}
            summed = {n: torch.zeros_like(stacked[n]) for n in names}
            drawn = [k for k in active if len(picks[k])]
            if drawn:
                parts = [jobs[k].data.batch(picks[k]) for k in drawn]
                _add_clipped_grads(
                    model, stacked, parts, drawn, summed, dp, precision, bucket_size
                )
            step = {n: torch.zeros_like(stacked[n]) for n in names}
            for k in active:  # each client's noise, drawn as when it trains alone
                q, n_k = plans[k][0], len(jobs[k].data)
                for n in names:
                    noise = gaussian_noise(
                        stacked[n].shape[1:], std, generators[k], secure=dp.secure
                    )
                    step[n][k] = (summed[n][k] + noise.to(device)) / (q * n_k)
                examples[k] += len(picks[k])
            mask = torch.zeros(k_total, dtype=torch.bool, device=device)
            mask[active] = True
            optimizer.step(step, mask)
    seconds = time.perf_counter() - started
    results = []
    for k in range(k_total):
        state = unstack(stacked, k)
        share = examples[k] / max(examples.sum(), 1)
        stats = LocalTrainStats(
            float("nan"), plans[k][1], int(examples[k]), 0, seconds * share
        )
        results.append((state, stats))
    return results


def _add_clipped_grads(
    model: AdapterClassifier,
    stacked: Mapping[str, torch.Tensor],
    parts: Sequence[Batch],
    owners: Sequence[int],
    summed: dict[str, torch.Tensor],
    dp: RecordDP,
    precision: str,
    bucket_size: int,
) -> None:
    """Add each example's clipped gradient to its client's row of ``summed``
    (``parts[i]`` is client ``owners[i]``'s batch), one length bucket at a
    time: per-example gradients do not depend on the grouping."""
    device = model.device
    batch, _, owner = shared_batch(parts, owners, device)
    names = list(summed)
    for idx in length_buckets(batch.attention_mask.sum(dim=1), bucket_size):
        sub, who = sub_batch(batch, idx), owner[idx]
        copies = {n: stacked[n][who].requires_grad_() for n in names}  # (b, ...)
        with autocast(precision, device):
            logits = model.per_example_logits(sub, copies)
        loss = F.cross_entropy(logits.float(), sub.labels, reduction="sum")
        grads = torch.autograd.grad(loss, list(copies.values()), allow_unused=True)
        per_example = {
            n: torch.zeros_like(c) if g is None else g
            for (n, c), g in zip(copies.items(), grads, strict=True)
        }
        clipped, _ = clip_per_example(per_example, dp.clip_norm)
        for n in names:
            summed[n].index_add_(0, who, clipped[n])
