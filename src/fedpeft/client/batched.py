"""Client-batched local training: the selected clients train together.

The backbone is frozen and shared, so the local steps of K clients can share one
forward and backward pass. At step t every client still training contributes
its own t-th mini-batch (drawn from its own seeded stream, exactly as when it
trains alone); the batches are concatenated and each example carries its
client's copy of the trainable tensors, gathered from a stacked ``(K, ...)``
leaf (:meth:`~fedpeft.peft.base.AdapterClassifier.per_example_logits`). The
loss is the sum over clients of each client's mean loss, so the gradient with
respect to client k's slice is the gradient of client k's own loss. The
optimizer, :class:`~fedpeft.client.stacked_adamw.StackedAdamW`, keeps one step
count per client and updates only the clients that took a step, so every client
follows the same AdamW trajectory as when it trains alone (up to floating-point
reassociation).

Supported for the methods with a per-example forward: soft prompts (each
example's prompt gathered from the stack), prefix tuning (each example's
key/value prefix, or its projection MLP), LoRA (each adapted layer adds
``s · B_i A_i x_i`` with batched products), IA3 (each example's vectors) and
BitFit (each example's biases); the engine falls back to sequential training
for full fine-tuning. Each shared step can also be split into length
buckets (:func:`length_buckets`): gradients add up exactly, so the grouping
only changes how much padding is computed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.flops import FlopMeter
from fedpeft.client.label_skew import LogitAdjust
from fedpeft.client.scaffold import GradientMean
from fedpeft.client.stacked_adamw import stacked_adamw
from fedpeft.client.steps import LocalTrainStats, batch_orders
from fedpeft.config import ClientSection
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


@dataclass(frozen=True)
class ClientJob:
    """One client's local training task.

    Attributes:
        client_id: The client's index (for errors and records).
        start: The state it starts from (the global payload).
        data: Its training examples.
        rng: Its shuffling stream, the one sequential training would use.
    """

    client_id: int
    start: Params
    data: TokenizedDataset
    rng: np.random.Generator


def supports_batching(model: AdapterClassifier) -> bool:
    """Whether ``model`` has a per-example forward (needed to batch clients)."""
    return type(model).per_example_logits is not AdapterClassifier.per_example_logits


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """One batch from several, right-padded to the longest sequence (images,
    ``(B, H, W, C)`` pixels of one shape and a ``(B, 1)`` mask, are stacked)."""
    width = max(b.attention_mask.shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        if t.ndim > 2:  # image pixels: no sequence axis to pad
            return t
        return F.pad(t, (0, width - t.shape[1]), value=value)

    # Padded positions are masked out, so the pad id itself never matters.
    return Batch(
        torch.cat([pad(b.input_ids, 0) for b in batches]),
        torch.cat([pad(b.attention_mask, 0) for b in batches]),
        torch.cat([b.labels for b in batches]),
    )


def length_buckets(lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Example indices grouped by length, ~``size`` per group (0: one group).

    The examples are sorted by length and cut into ``ceil(n / size)`` groups of
    near-equal count, so each group is padded only to its own longest member.
    """
    n = int(lengths.shape[0])
    if size <= 0 or n <= size:
        return [torch.arange(n, device=lengths.device)]
    order = torch.argsort(lengths, stable=True)
    return [g for g in torch.tensor_split(order, math.ceil(n / size)) if len(g)]


def shared_batch(
    parts: Sequence[Batch], clients: Sequence[int], device: torch.device
) -> tuple[Batch, list[int], torch.Tensor]:
    """The clients' batches as one, concatenated on the host and copied to
    ``device`` once; the batches' sizes; and each example's client ``(B,)``."""
    batch = concat_batches(parts).to(device)
    sizes = [len(p) for p in parts]
    owner = torch.repeat_interleave(
        torch.tensor(clients, device=device),
        torch.tensor(sizes, device=device),
        output_size=len(batch),  # no device-to-host sync to learn the length
    )
    return batch, sizes, owner


def check_jobs(model: AdapterClassifier, jobs: Sequence[ClientJob]) -> None:
    """Refuse what client batching cannot train.

    Raises:
        ValueError: if the model has no per-example forward, a job has no
            data, or a start state does not have the model's tensors.
    """
    if not supports_batching(model):
        raise ValueError(
            f"{type(model).__name__} has no per-example forward; train its "
            "clients one after another"
        )
    names = set(model.trainable_parameters())
    for job in jobs:
        if len(job.data) == 0:
            raise ValueError(
                f"client {job.client_id} has no training examples; raise "
                "partition.min_size"
            )
        if set(job.start) != names:
            raise ValueError(
                f"client {job.client_id}'s start state has keys {sorted(job.start)}, "
                f"expected {sorted(names)}"
            )


def unstack(stacked: Mapping[str, torch.Tensor], k: int) -> Params:
    """Client ``k``'s slice of the stacked tensors, as a host payload."""
    return {
        n: t[k].detach().cpu().numpy().astype(np.float32, copy=True)
        for n, t in stacked.items()
    }


def gather_rows(stacked: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Each example's copy ``stacked[rows[i]]`` of a stacked ``(K, ...)`` leaf,
    as ``(len(rows), ...)``, with a backward that is the same bit for bit on
    every run.

    ``stacked[rows]`` would do the same forward, but its backward
    (``index_put_`` with accumulation) adds the rows of one client with
    atomic float adds on several threads when torch has more than one
    intra-op thread: the order of the additions, and so the gradient's last
    bits, change from run to run. ``index_select``'s backward (``index_add_``)
    adds the rows one after another, in the order of ``rows``.
    """
    return stacked.index_select(0, rows)


BucketResult = tuple[torch.Tensor, tuple[torch.Tensor, ...]]


def sub_batch(batch: Batch, idx: torch.Tensor) -> Batch:
    """The examples ``idx`` of ``batch``, trimmed to their longest (token
    matrices only: image pixels keep their shape)."""
    width = int(batch.attention_mask[idx].sum(dim=1).max())
    ids = batch.input_ids[idx]
    return Batch(
        ids[:, :width] if ids.ndim == 2 else ids,
        batch.attention_mask[idx, :width],
        batch.labels[idx],
    )


def _run_buckets(
    work: Callable[[Batch, torch.Tensor], BucketResult],
    batch: Batch,
    buckets: Sequence[torch.Tensor],
    meter: FlopMeter,
    pool: ThreadPoolExecutor | None,
) -> list[BucketResult]:
    """Every bucket's (losses, gradients), in bucket order.

    A bucket whose length the meter has not seen yet runs alone under the FLOP
    counter (a dispatch mode, not to be shared across threads); the others run
    on ``pool`` when given and are counted from the meter's per-sequence
    figures.
    """
    subs = [sub_batch(batch, idx) for idx in buckets]
    keys = [("batched", sub.input_ids.shape[1]) for sub in subs]
    out: dict[int, BucketResult] = {}
    for i, (sub, idx, key) in enumerate(zip(subs, buckets, keys, strict=True)):
        if not meter.known(key):

            def counted(sub: Batch = sub, idx: torch.Tensor = idx) -> BucketResult:
                return work(sub, idx)

            out[i] = meter.run(key, counted, count=len(sub))
    rest = [i for i in range(len(buckets)) if i not in out]
    for i in rest:
        meter.add(keys[i], len(subs[i]))
    if pool is not None and len(rest) > 1:
        done = pool.map(lambda i: work(subs[i], buckets[i]), rest)
        out.update(zip(rest, done, strict=True))
    else:
        for i in rest:
            out[i] = work(subs[i], buckets[i])
    return [out[i] for i in range(len(buckets))]


def _clip_per_client(
    grads: dict[str, torch.Tensor], max_norm: float, num_clients: int
) -> None:
    """``clip_grad_norm_`` on each client's slice of the gradients, in place."""
    squares = torch.zeros(num_clients, device=next(iter(grads.values())).device)
    for g in grads.values():
        squares += g.reshape(num_clients, -1).pow(2).sum(dim=1)
    coef = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)  # (K,)
    for name, g in grads.items():
        grads[name] = g * coef.view((-1,) + (1,) * (g.ndim - 1))


def train_clients_batched(
    model: AdapterClassifier,
    jobs: Sequence[ClientJob],
    cfg: ClientSection,
    *,
    proximal_mu: float = 0.0,
    precision: str = "fp32",
    flops: FlopMeter | None = None,
    bucket_size: int = 0,
    bucket_threads: int = 1,
    adjust: LogitAdjust | None = None,
    corrections: Mapping[str, torch.Tensor] | None = None,
) -> list[tuple[Params, LocalTrainStats]]:
    """Train every job's copy of ``model``'s trainable tensors, together.

    Args:
        model: Any adapter of the method (its own tensors are not changed).
        jobs: The clients to train, each from its own start state.
        cfg: Local-training settings shared by the clients.
        proximal_mu: FedProx μ; each client is pulled to its own start.
        precision: Backbone compute precision (``"auto"``, ``"fp32"`` or ``"bf16"``).
        flops: Accumulates the FLOPs of the shared steps (a meter kept across
            rounds measures each step shape once).
        bucket_size: Split each shared step's examples, sorted by length, into
            groups of about this many, each padded only to its own longest
            (0: one padded batch). The gradient is the same sum either way.
        bucket_threads: Run the buckets of a step on this many threads (in
            one per-example session of the model); the gradients are summed
            in bucket order, so the result does not depend on scheduling.
            Two streams of one-thread operations were faster than one stream
            of two-thread operations on the 2-core CPU until the frozen body's
            weights were packed; now one stream is (docs/benchmarks.md).
        adjust: The clients' label-skew logit maps stacked ``(K, C)``
            (:meth:`LogitAdjust.stack`).
        corrections: SCAFFOLD's ``c − c_k`` stacked ``(K, ...)`` per tensor;
            each client's stats then carry its mean raw gradient as ``control``.

    Returns:
        Per job, in order: the trained state and its statistics. A client's
        FLOPs and seconds are the shared steps' split by its share of examples.

    Raises:
        ValueError: if the model has no per-example forward, a job has no
            data, or the start states do not fit the model.
    """
    check_jobs(model, jobs)
    if not jobs:
        return []
    names = list(model.trainable_parameters())
    k_total = len(jobs)
    stacked = {
        n: t.requires_grad_(True)
        for n, t in model.stack_states([j.start for j in jobs]).items()
    }
    leaves = [stacked[n] for n in names]
    anchor = {n: t.detach().clone() for n, t in stacked.items()}
    optimizer = stacked_adamw(model, stacked, cfg)
    grad_mean = GradientMean() if corrections is not None else None
    orders = [
        list(
            batch_orders(
                len(j.data), cfg.batch_size, cfg.local_epochs, cfg.local_steps, j.rng
            )
        )
        for j in jobs
    ]
    meter = flops if flops is not None else FlopMeter()
    device = model.device
    pool = ThreadPoolExecutor(bucket_threads) if bucket_threads > 1 else None
    losses: list[list[float]] = [[] for _ in jobs]
    shares = np.zeros(k_total)  # examples each client put through
    flop_share = np.zeros(k_total)
    started = time.perf_counter()
    with model.per_example_session():  # hooks (if any) once for all steps
        for t in range(max(len(o) for o in orders)):
            active = [k for k in range(k_total) if t < len(orders[k])]
            parts = [jobs[k].data.batch(orders[k][t]) for k in active]
            batch, sizes, owner = shared_batch(parts, active, device)
            counts = torch.tensor(sizes, device=device)
            inv_count = torch.repeat_interleave(
                1.0 / counts.double(), counts, output_size=len(batch)
            ).float()
            mask = torch.zeros(k_total, dtype=torch.bool, device=device)
            mask[active] = True

            buckets = length_buckets(batch.attention_mask.sum(dim=1), bucket_size)

            # Σ_k (mean loss of client k), summed bucket by bucket: gradients add
            # up exactly, whatever the grouping.
            def bucket(
                sub: Batch,
                idx: torch.Tensor,
                owner: torch.Tensor = owner,
                inv_count: torch.Tensor = inv_count,
            ) -> BucketResult:
                params = {n: gather_rows(stacked[n], owner[idx]) for n in names}
                with autocast(precision, device):
                    logits = model.per_example_logits(sub, params)
                logits = (
                    logits.float() if adjust is None else adjust(logits, owner[idx])
                )
                loss = F.cross_entropy(logits, sub.labels, reduction="none")
                # A tensor off the loss's path (BitFit: the unused pooler's bias)
                # gets no gradient, as in sequential training.
                part = torch.autograd.grad(
                    (loss * inv_count[idx]).sum(), leaves, allow_unused=True
                )
                return loss.detach(), tuple(part)

            before = meter.total
            bucket_results = _run_buckets(bucket, batch, buckets, meter, pool)
            step_flops = meter.total - before
            per_example = torch.empty(len(batch), device=device)
            grads: list[torch.Tensor | None] = [None] * len(leaves)
            for idx, (loss, part) in zip(buckets, bucket_results, strict=True):
                per_example[idx] = loss
                for i, p in enumerate(part):  # fixed order
                    if p is not None:
                        have = grads[i]
                        grads[i] = p.clone() if have is None else have + p
            by_name = {n: g for n, g in zip(names, grads, strict=True) if g is not None}
            if proximal_mu > 0:  # ∇ (μ/2)·‖θ_k − θ_k,start‖² = μ·(θ_k − θ_k,start)
                for n in names:  # every tensor, as the sequential loss has it
                    prox = proximal_mu * (stacked[n].detach() - anchor[n])
                    by_name[n] = by_name[n] + prox if n in by_name else prox
            if grad_mean is not None:
                grad_mean.add(by_name, mask)
            if cfg.max_grad_norm > 0:
                _clip_per_client(by_name, cfg.max_grad_norm, k_total)
            if corrections is not None:  # SCAFFOLD: g + c − c_k, per client
                for n in names:
                    have = by_name.get(n)
                    by_name[n] = (
                        corrections[n] if have is None else have + corrections[n]
                    )
            optimizer.step(by_name, mask)
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            example_losses = per_example.cpu()  # one transfer per step
            for i, k in enumerate(active):
                n_k = sizes[i]
                own = example_losses[offsets[i] : offsets[i + 1]]
                losses[k].append(float(own.mean()))
                shares[k] += n_k
                flop_share[k] += step_flops * n_k / len(batch)
    seconds = time.perf_counter() - started
    if pool is not None:
        pool.shutdown()
    controls = (
        None
        if grad_mean is None
        else grad_mean.mean(names, {n: stacked[n] for n in names})
    )
    results = []
    for k in range(k_total):
        state = unstack(stacked, k)
        stats = LocalTrainStats(
            loss=float(np.mean(losses[k])) if losses[k] else math.nan,
            steps=len(losses[k]),
            examples=int(shares[k]),
            flops=int(flop_share[k]),
            seconds=seconds * shares[k] / max(shares.sum(), 1),
            control=None if controls is None else unstack(controls, k),
        )
        results.append((state, stats))
    return results
