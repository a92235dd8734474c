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
    generator: torch.Generator | None = None,
) -> Inversion:
    """Dummy embeddings whose gradient points like ``observed`` (a gradient,
    or the negative of an update), read back as tokens.

    Raises:
        ValueError: if ``observed`` lacks one of the model's trainable tensors.
    """
    params = trainable(model)
    missing = [n for n, _ in params if n not in observed]
    if missing:
        raise ValueError(f"the observed update lacks {missing}")
    target = torch.cat([observed[n].reshape(-1).float() for n, _ in params])
    table = model.backbone.word_embeddings.weight.detach().float()
    norm = table.norm(dim=1).mean()
    dim = table.shape[1]
    classes = model.head.out_features
    dummy = (
        torch.randn(batch_size, seq_len, dim, generator=generator) * table.std()
    ).requires_grad_(True)
    label_logits = torch.zeros(batch_size, classes, requires_grad=True)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    opt = torch.optim.Adam([dummy, label_logits], lr=lr)
    distance = torch.tensor(1.0)
    with sdpa_kernel(SDPBackend.MATH):  # fused kernels lack double backward
        for _ in range(iters):
            distance = _step(model, params, dummy, label_logits, mask, target)
            prior = ((dummy.norm(dim=2) - norm) ** 2).mean() / norm**2
            opt.zero_grad()
            (distance + norm_weight * prior).backward()
            opt.step()
    with torch.no_grad():
        unit = F.normalize(table, dim=1)
        nearest = (F.normalize(dummy.detach(), dim=2) @ unit.T).argmax(dim=2)
    return Inversion(
        nearest, float(distance.detach()), label_logits.detach().argmax(dim=1)
    )


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
