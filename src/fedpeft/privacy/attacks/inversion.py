"""Gradient inversion of a soft-prompt update: which tokens did the client see?

The backbone and its embedding table are frozen and public, so the update
(prompt vectors and head) carries the inputs only through the gradient they
produced. The attack follows DLG/TAG (Zhu et al. 2019; Deng et al. 2021) in
the continuous relaxation LAMP (Balunović et al. 2022) starts from: optimise
dummy input embeddings (and soft labels) so that the gradient they produce
under the same global state points like the observed update (cosine
distance, scale-free: the client's learning rate and step count are
unknown), plus a small pull of each dummy vector towards the norm of real
token embeddings; then read each position's nearest vocabulary embedding
(cosine). The sequence length is taken as known (LAMP's assumption).

The continuous optimum is usually off the vocabulary: many embedding
sequences produce the same small prompt-and-head gradient. LAMP's discrete
phase makes the answer tokens again; here it is a greedy coordinate search
(:func:`refine_tokens`): for one position at a time, HotFlip's first-order
estimate (Ebrahimi et al. 2018) ranks every vocabulary token by how much it
would lower the gradient distance, and the best ``candidates`` of them are
scored exactly, all in one batched pass (per-example gradients of the prompt
and the head). A move is kept only when the exact distance falls. Known
positions ([CLS], [SEP]) stay fixed. For one example the label is exact:
the head-bias gradient ``p - y`` is negative at the true class only (iDLG,
Zhao et al. 2020; :func:`label_from_bias`).

Success is the bag-of-tokens F1 between recovered and true tokens, special
tokens excluded (TAG/LAMP report ROUGE-1, the same unigram overlap).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fedpeft.peft.prompt.model import SoftPromptClassifier


def prompt_logits(
    model: SoftPromptClassifier, embeds: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The classifier's logits for input word embeddings ``(B, T, d)`` (the
    path of :meth:`SoftPromptClassifier.features` after the embedding lookup)."""
    prompt = model.prompt.expand(len(embeds), -1, -1)
    length = prompt.shape[1]
    inputs = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
    full = torch.cat([mask.new_ones(len(embeds), length), mask], dim=1)
    hidden = model.backbone.encode(inputs, full)
    feats = model.backbone.pool(hidden[:, length:], mask)
    logits: torch.Tensor = model.head(feats.float())
    return logits


def trainable(model: SoftPromptClassifier) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


PAYLOAD = ("prompt", "head.weight", "head.bias")


def per_example_gradients(
    model: SoftPromptClassifier, embeds: torch.Tensor, soft_labels: torch.Tensor
) -> torch.Tensor:
    """Each example's cross-entropy gradient, flattened in :func:`trainable`
    order, ``(N, D)``, from one forward and one backward pass.

    Every example gets its own copy of the prompt, so the gradient with
    respect to the copies is per example; the head's is ``(p - y) f`` by hand.

    Raises:
        ValueError: if the trainable state is not exactly prompt + linear head.
    """
    names = tuple(n for n, _ in trainable(model))
    if names != PAYLOAD:
        raise ValueError(
            f"per-example gradients need a soft prompt and a linear head with "
            f"bias as the trainable state {PAYLOAD}; this model trains {names}"
        )
    n = len(embeds)
    length = model.prompt.shape[0]
    prompt = model.prompt.detach().expand(n, -1, -1).clone().requires_grad_(True)
    mask = embeds.new_ones(embeds.shape[:2], dtype=torch.long)
    full = torch.cat([mask.new_ones(n, length), mask], dim=1)
    hidden = model.backbone.encode(
        torch.cat([prompt.to(embeds.dtype), embeds], 1), full
    )
    feats = model.backbone.pool(hidden[:, length:], mask).float()
    logits = model.head(feats)
    loss = -(soft_labels * logits.log_softmax(dim=1)).sum()
    (g_prompt,) = torch.autograd.grad(loss, prompt)
    diff = (logits.softmax(dim=1) - soft_labels).detach()
    g_weight = diff[:, :, None] * feats.detach()[:, None, :]
    return torch.cat([g_prompt.reshape(n, -1), g_weight.reshape(n, -1), diff], dim=1)


def label_from_bias(observed: Mapping[str, torch.Tensor]) -> int:
    """The label of a one-example gradient: the class whose head-bias
    gradient ``p_c - y_c`` is negative (iDLG)."""
    return int(observed["head.bias"].argmin())


def batch_gradient(
    model: SoftPromptClassifier, input_ids: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The mean cross-entropy gradient of a real batch (full-length inputs)."""
    params = trainable(model)
    embeds = model.backbone.embed(input_ids)
    mask = torch.ones_like(input_ids)
    loss = F.cross_entropy(prompt_logits(model, embeds, mask), labels)
    grads = torch.autograd.grad(loss, [p for _, p in params])
    return {n: g.detach() for (n, _), g in zip(params, grads, strict=True)}


@dataclass(frozen=True)
class Inversion:
    """Recovered token ids ``(B, T)``, the final gradient distance, and the
    labels the soft labels settled on."""

    tokens: torch.Tensor
    distance: float
    labels: torch.Tensor


def invert_prompt_update(
    model: SoftPromptClassifier,
    observed: Mapping[str, torch.Tensor],
    batch_size: int,
    seq_len: int,
    *,
    iters: int = 200,
    lr: float = 0.05,
    norm_weight: float = 0.01,
    labels: torch.Tensor | None = None,
    fixed: Mapping[int, int] | None = None,
    sweeps: int = 0,
    candidates: int = 64,
    generator: torch.Generator | None = None,
) -> Inversion:
    """Dummy embeddings whose gradient points like ``observed`` (a gradient,
    or the negative of an update), read back as tokens, then ``sweeps``
    rounds of :func:`refine_tokens`.

    Args:
        labels: Known labels ``(B,)``; ``None`` optimises soft labels.
        fixed: Known tokens by position (e.g. ``{0: cls_id, T - 1: sep_id}``),
            held at their embeddings throughout.

    Raises:
        ValueError: if ``observed`` lacks one of the model's trainable tensors.
    """
    params = trainable(model)
    target = _flat_target(observed, params)
    table = model.backbone.word_embeddings.weight.detach().float()
    norm = table.norm(dim=1).mean()
    dim = table.shape[1]
    classes = model.head.out_features
    dummy = (
        torch.randn(batch_size, seq_len, dim, generator=generator) * table.std()
    ).requires_grad_(True)
    label_logits = torch.zeros(batch_size, classes)
    if labels is not None:
        label_logits = F.one_hot(labels, classes).float() * 1e4
    label_logits.requires_grad_(labels is None)
    fixed = dict(fixed or {})
    pinned = torch.zeros(batch_size, seq_len, 1)
    known = torch.zeros(batch_size, seq_len, dim)
    for position, token in fixed.items():
        pinned[:, position] = 1.0
        known[:, position] = table[token]
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    free = [dummy] + ([label_logits] if labels is None else [])
    opt = torch.optim.Adam(free, lr=lr)
    distance = torch.tensor(1.0)
    with sdpa_kernel(SDPBackend.MATH):  # fused kernels lack double backward
        for _ in range(iters):
            embeds = pinned * known + (1 - pinned) * dummy
            distance = _step(model, params, embeds, label_logits, mask, target)
            prior = ((dummy.norm(dim=2) - norm) ** 2).mean() / norm**2
            opt.zero_grad()
            (distance + norm_weight * prior).backward()
            opt.step()
    with torch.no_grad():
        unit = F.normalize(table, dim=1)
        nearest = (F.normalize(dummy.detach(), dim=2) @ unit.T).argmax(dim=2)
        for position, token in fixed.items():
            nearest[:, position] = token
    found = label_logits.detach().argmax(dim=1)
    if sweeps < 1:
        return Inversion(nearest, float(distance.detach()), found)
    return refine_tokens(
        model,
        observed,
        nearest,
        found,
        sweeps=sweeps,
        candidates=candidates,
        fixed=fixed,
        generator=generator,
    )


def refine_tokens(
    model: SoftPromptClassifier,
    observed: Mapping[str, torch.Tensor],
    tokens: torch.Tensor,
    labels: torch.Tensor,
    *,
    sweeps: int = 8,
    candidates: int = 64,
    fixed: Mapping[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> Inversion:
    """Greedy token search that lowers the exact gradient distance.

    Each sweep visits the free positions in a random order; at a position,
    HotFlip scores ``(e_v - e_cur) . d(distance)/d(e)`` rank the vocabulary
    for every example, the ``candidates`` best per example are scored
    exactly in one batched pass, and the best single substitution is kept if
    it lowers the distance. Stops early after a sweep without a move.
    """
    params = trainable(model)
    target = _flat_target(observed, params)
    table = model.backbone.word_embeddings.weight.detach().float()
    classes = model.head.out_features
    soft = F.one_hot(labels, classes).float()
    batch, length = tokens.shape
    banned = torch.tensor(sorted(set(model.backbone.tokenizer.all_special_ids)))
    free = [t for t in range(length) if t not in (fixed or {})]
    tokens = tokens.clone()
    grads = per_example_gradients(model, model.backbone.embed(tokens).detach(), soft)
    total = grads.sum(dim=0)
    best = float(1.0 - F.cosine_similarity(total, target, dim=0))
    for _ in range(sweeps):
        moved = False
        order = torch.randperm(len(free), generator=generator).tolist()
        for position in (free[i] for i in order):
            slope = _distance_slope(model, params, tokens, soft, target)[:, position]
            scores = (
                slope @ table.T - (slope * table[tokens[:, position]]).sum(1)[:, None]
            )
            scores[:, banned] = float("inf")
            picks = scores.topk(candidates, dim=1, largest=False).indices  # (B, K)
            variants = tokens.unsqueeze(1).repeat(1, candidates, 1)
            variants[:, :, position] = picks
            fresh = per_example_gradients(
                model,
                model.backbone.embed(variants.reshape(-1, length)).detach(),
                soft.repeat_interleave(candidates, dim=0),
            ).reshape(batch, candidates, -1)
            sums = total - grads.unsqueeze(1) + fresh  # swap one example's gradient
            distance = 1.0 - F.cosine_similarity(sums, target.view(1, 1, -1), dim=2)
            b, k = divmod(int(distance.argmin()), candidates)
            if float(distance[b, k]) < best - 1e-7:
                best = float(distance[b, k])
                tokens[b, position] = picks[b, k]
                grads[b] = fresh[b, k]
                total = sums[b, k]
                moved = True
        if not moved:
            break
    return Inversion(tokens, best, labels)


def _flat_target(
    observed: Mapping[str, torch.Tensor],
    params: Sequence[tuple[str, torch.nn.Parameter]],
) -> torch.Tensor:
    missing = [n for n, _ in params if n not in observed]
    if missing:
        raise ValueError(f"the observed update lacks {missing}")
    return torch.cat([observed[n].reshape(-1).float() for n, _ in params])


def _distance_slope(
    model: SoftPromptClassifier,
    params: Sequence[tuple[str, torch.nn.Parameter]],
    tokens: torch.Tensor,
    soft: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """d(gradient distance)/d(input embeddings) at ``tokens``, ``(B, T, d)``."""
    embeds = model.backbone.embed(tokens).detach().float().requires_grad_(True)
    mask = torch.ones(tokens.shape, dtype=torch.long)
    with sdpa_kernel(SDPBackend.MATH):
        distance = _step(model, params, embeds, soft.log(), mask, target)
        (slope,) = torch.autograd.grad(distance, embeds)
    return slope


def _step(
    model: SoftPromptClassifier,
    params: Sequence[tuple[str, torch.nn.Parameter]],
    dummy: torch.Tensor,
    label_logits: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """1 − cos(gradient of the dummy batch, target), differentiable."""
    logits = prompt_logits(model, dummy, mask)
    soft = label_logits.softmax(dim=1)
    loss = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    grads = torch.autograd.grad(loss, [p for _, p in params], create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    return 1.0 - F.cosine_similarity(flat, target, dim=0)


def token_f1(
    recovered: Sequence[int], truth: Sequence[int], ignore: set[int]
) -> tuple[float, float, float]:
    """Bag-of-tokens (multiset) precision, recall and F1, ``ignore`` dropped."""
    got = Counter(int(t) for t in recovered if int(t) not in ignore)
    want = Counter(int(t) for t in truth if int(t) not in ignore)
    overlap = sum((got & want).values())
    precision = overlap / max(sum(got.values()), 1)
    recall = overlap / max(sum(want.values()), 1)
    f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
    return precision, recall, f1
