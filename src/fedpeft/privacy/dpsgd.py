"""Record-level DP-SGD on an adapter's trainable parameters (torch.func).

Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1, with
Poisson-sampled batches L_t (each record kept with probability q) and the
expected batch size q·n as the denominator:

    g_i = ∇_θ ℓ(θ; x_i)                                   per example
    ḡ_i = g_i · min(1, C / ‖g_i‖₂)                        clip (norm over ALL tensors)
    g̃   = ( Σ_{i∈L_t} ḡ_i + N(0, σ²C² I) ) / (q·n)        noise, public denominator
    θ  ← optimizer step with gradient g̃

Per-example gradients come from ``torch.func``: ``vmap(grad(loss of one
example))`` over the TRAINABLE parameters only; frozen weights and buffers stay
in the module (or the forward's closure) and get no per-example copies. The
model must be vmap-friendly: no data-dependent Python control flow on tensor
values, no in-place updates of inputs, and no dropout (put it in eval mode:
vmap refuses random ops, and a dropout mask from the global RNG would break the
explicit-randomness rule). :func:`per_example_grads_loop` is the slow reference
for models that cannot be vmapped.

Accounting: :func:`fedpeft.privacy.accounting.record_level_epsilon`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils import _pytree as pytree

from fedpeft.models.tokenized import Batch
from fedpeft.privacy.accounting import check_positive
from fedpeft.privacy.clipping import check_clip_norm
from fedpeft.privacy.noise import secure_standard_normal
from fedpeft.privacy.sampling import poisson_batches, poisson_subsample

__all__ = [
    "DpSgdStats",
    "ForwardFn",
    "LossFn",
    "batch_forward",
    "clip_per_example",
    "dp_sgd_step",
    "functional_forward",
    "per_example_grads",
    "per_example_grads_loop",
    "poisson_batches",
    "poisson_subsample",
    "trainable_params",
]

ForwardFn = Callable[[Mapping[str, Tensor], Any], Tensor]
"""``forward(params, inputs) -> logits (batch, classes)``; ``inputs`` is a tensor
or a pytree (dict/tuple) of tensors with a leading batch dimension."""

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(logits (batch, classes), labels (batch,)) -> mean loss (scalar)``."""


def trainable_params(model: nn.Module) -> dict[str, Tensor]:
    """Detached views of the parameters with ``requires_grad`` (the DP payload)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def functional_forward(model: nn.Module) -> ForwardFn:
    """``forward(params, inputs) = model(inputs)`` with ``params`` swapped in.

    Parameters not in ``params`` (frozen ones) and buffers are the module's own.
    """

    def forward(params: Mapping[str, Tensor], inputs: Any) -> Tensor:
        logits: Tensor = functional_call(model, dict(params), (inputs,))
        return logits

    return forward


def batch_forward(model: nn.Module) -> ForwardFn:
    """Like :func:`functional_forward` for a module whose forward takes a
    :class:`fedpeft.models.tokenized.Batch` (an ``AdapterClassifier``).

    ``inputs`` is ``{"input_ids": (B, T), "attention_mask": (B, T)}``; the Batch's
    labels are a zero placeholder (the forward must not read them).
    """

    def forward(params: Mapping[str, Tensor], inputs: Any) -> Tensor:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        batch = Batch(ids, mask, ids.new_zeros(ids.shape[0]))
        logits: Tensor = functional_call(model, dict(params), (batch,))
        return logits

    return forward


def _batch_size(labels: Tensor) -> int:
    return int(labels.shape[0])


def _empty_grads(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: p.new_zeros((0, *p.shape)) for n, p in params.items()}


def _per_example(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    loss_fn: LossFn,
    inputs: Any,
    labels: Tensor,
    chunk_size: int | None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-example gradients ``{name: (B, *shape)}`` and losses ``(B,)``."""
    if _batch_size(labels) == 0:
        return _empty_grads(params), labels.new_zeros(0, dtype=torch.float32)

    def loss_one(p: dict[str, Tensor], x: Any, y: Tensor) -> tuple[Tensor, Tensor]:
        xb = pytree.tree_map(lambda t: t.unsqueeze(0), x)  # batch of one
        loss = loss_fn(forward(p, xb), y.unsqueeze(0))
        return loss, loss.detach()

    per_example = vmap(
        grad(loss_one, has_aux=True), in_dims=(None, 0, 0), chunk_size=chunk_size
    )
    grads, losses = per_example(dict(params), inputs, labels)
    return dict(grads), losses


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Any,
    labels: Tensor,
    *,
    forward: ForwardFn | None = None,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Gradient of each example's loss w.r.t. ``model``'s trainable parameters.

    ``g_i = ∇_θ loss_fn(forward(θ, x_i), y_i)`` (Abadi et al. 2016, Alg. 1).

    Args:
        model: Supplies the trainable parameters θ (``requires_grad``).
        loss_fn: Mean loss over a batch; called on batches of one.
        inputs: ``(B, ...)`` tensor or pytree of such tensors.
        labels: ``(B,)`` targets.
        forward: ``forward(params, inputs) -> logits``; default
            :func:`functional_forward` of ``model``.
        chunk_size: Examples per vmap chunk (bounds memory); ``None`` = all.

    Returns:
        ``{name: (B, *param.shape)}`` for every trainable parameter; ``B`` may be 0.
    """
    fwd = forward if forward is not None else functional_forward(model)
    params = trainable_params(model)
    grads, _ = _per_example(fwd, params, loss_fn, inputs, labels, chunk_size)
    return grads


def per_example_grads_loop(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Any,
    labels: Tensor,
    *,
    forward: ForwardFn | None = None,
) -> dict[str, Tensor]:
    """Reference/fallback for :func:`per_example_grads`: one backward per example."""
    fwd = forward if forward is not None else functional_forward(model)
    params = trainable_params(model)
    rows: dict[str, list[Tensor]] = {n: [] for n in params}
    for i in range(_batch_size(labels)):
        leaf = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        xi = pytree.tree_map(lambda t, i=i: t[i : i + 1], inputs)
        loss = loss_fn(fwd(leaf, xi), labels[i : i + 1])
        gs = torch.autograd.grad(loss, list(leaf.values()), allow_unused=True)
        for (n, p), g in zip(leaf.items(), gs, strict=True):
            rows[n].append(torch.zeros_like(p) if g is None else g)
    if not labels.shape[0]:
        return _empty_grads(params)
    return {n: torch.stack(r) for n, r in rows.items()}


def clip_per_example(
    grads: Mapping[str, Tensor], max_norm: float
) -> tuple[dict[str, Tensor], Tensor]:
    """Clip each example's gradient (all tensors jointly) to L2 norm ≤ C.

    ``ḡ_i = g_i · C / max(C, ‖g_i‖₂)`` — no division by zero for a zero gradient
    since C > 0. Norms are computed in float64.

    Returns:
        ``(clipped {name: (B, *shape)}, norms (B,) float64 before clipping)``.
    """
    c = check_clip_norm(max_norm)
    if not grads:
        raise ValueError("no per-example gradients to clip (no trainable parameters)")
    first = next(iter(grads.values()))
    b = int(first.shape[0])
    sq = first.new_zeros(b, dtype=torch.float64)
    for g in grads.values():
        sq = sq + g.reshape(b, math.prod(g.shape[1:])).double().pow(2).sum(dim=1)
    norms = sq.sqrt()  # (B,)
    factor = c / torch.clamp(norms, min=c)  # (B,) in (0, 1]
    clipped = {
        n: g * factor.to(g.dtype).view(b, *([1] * (g.dim() - 1)))
        for n, g in grads.items()
    }
    return clipped, norms


def _gaussian(
    like: Tensor, std: float, generator: torch.Generator | None, secure: bool
) -> Tensor:
    """``N(0, std²)`` shaped like ``like``: seeded by ``generator`` or OS entropy."""
    if std == 0.0:
        return torch.zeros_like(like)
    if secure:
        draws = secure_standard_normal(like.numel()) * std
        noise = torch.from_numpy(draws).reshape(like.shape)
        return noise.to(device=like.device, dtype=like.dtype)
    if generator is None:
        raise ValueError(
            "DP-SGD noise needs an explicit torch.Generator or secure=True"
        )
    seeded = torch.randn(
        like.shape, generator=generator, dtype=like.dtype, device=generator.device
    )  # on the generator's device (the CPU), so seeds mean the same anywhere
    return seeded.to(like.device) * std


@dataclass(frozen=True)
class DpSgdStats:
    """One DP-SGD step. ``loss`` and ``clipped_fraction`` come from raw data and
    are NOT private (diagnostics only)."""

    batch_size: int
    loss: float
    clipped_fraction: float
    noise_std: float


def _noisy_mean_grads(
    grads: Mapping[str, Tensor],
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator | None,
    secure: bool,
) -> tuple[dict[str, Tensor], Tensor]:
    """Steps 2–4 of Abadi et al. Alg. 1: clip, sum, add N(0, σ²C²), divide by q·n."""
    clipped, norms = clip_per_example(grads, max_grad_norm)
    std = noise_multiplier * max_grad_norm
    out = {}
    for name, g in clipped.items():
        total = g.sum(dim=0)  # (*shape)
        out[name] = (total + _gaussian(total, std, generator, secure)) / (
            expected_batch_size
        )
    return out, norms


def dp_sgd_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Any,
    labels: Tensor,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator | None,
    secure: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    forward: ForwardFn | None = None,
    chunk_size: int | None = None,
) -> DpSgdStats:
    """One DP-SGD step on ``model``'s trainable parameters (Abadi et al. 2016).

    Sets each trainable parameter's ``.grad`` to the noisy clipped mean
    ``g̃ = (Σ_i ḡ_i + N(0, σ²C² I)) / (q·n)`` and calls ``optimizer.step()``.
    An EMPTY batch (possible under Poisson sampling) still takes a noise-only
    step, as the accounting assumes.

    Args:
        model: Module whose ``requires_grad`` parameters are trained.
        optimizer: Optimizer over exactly those parameters.
        inputs: ``(B, ...)`` tensor or pytree; labels ``(B,)``.
        max_grad_norm: Per-example clipping bound C > 0.
        noise_multiplier: σ ≥ 0 (0 disables the noise: no DP).
        expected_batch_size: q·n > 0, the public denominator.
        generator: Seeded ``torch.Generator`` for the noise (``None`` only with
            ``secure=True`` or σ = 0).
        secure: Draw the noise from OS entropy.
        loss_fn: Mean loss of a batch, default cross-entropy.
        forward: ``forward(params, inputs) -> logits`` (see :func:`batch_forward`
            for an ``AdapterClassifier``); default :func:`functional_forward`.
        chunk_size: vmap chunk (memory bound).

    Raises:
        ValueError: for C ≤ 0, σ < 0, q·n ≤ 0 or a missing noise source.
    """
    check_clip_norm(max_grad_norm, "max_grad_norm")
    if not (np.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    denominator = check_positive(expected_batch_size, "expected_batch_size")
    if noise_multiplier > 0 and generator is None and not secure:
        raise ValueError(
            "DP-SGD noise needs an explicit torch.Generator or secure=True"
        )
    params = trainable_params(model)
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad)")
    fwd = forward if forward is not None else functional_forward(model)
    grads, losses = _per_example(fwd, params, loss_fn, inputs, labels, chunk_size)
    noisy, norms = _noisy_mean_grads(
        grads, max_grad_norm, noise_multiplier, denominator, generator, secure
    )
    for name, param in model.named_parameters():
        if name in noisy:
            param.grad = noisy[name].to(param.dtype)
    optimizer.step()
    b = _batch_size(labels)
    return DpSgdStats(
        batch_size=b,
        loss=float(losses.mean()) if b else float("nan"),
        clipped_fraction=float((norms > max_grad_norm).double().mean()) if b else 0.0,
        noise_std=noise_multiplier * max_grad_norm / denominator,
    )
