"""AdamW over tensors stacked along a client dimension, one step count per client.

Client-batched training (:mod:`fedpeft.client.batched`, and its DP-SGD variant
:mod:`fedpeft.client.dp_local`) keeps every client's copy of the trainable
tensors in one ``(K, ...)`` leaf; :class:`StackedAdamW` steps each client's
slice exactly as ``torch.optim.AdamW`` would step that client alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedpeft.config import ClientSection
from fedpeft.peft.base import AdapterClassifier


class StackedAdamW:
    """AdamW over tensors whose first dimension indexes clients.

    The arithmetic of ``torch.optim.AdamW`` (Loshchilov & Hutter 2019, with
    torch's bias correction) applied to each client's slice, with one step
    count per client; clients not in ``active`` are left untouched (no decay,
    no moment update), as if they had not taken the step.

    Args:
        params: Stacked leaves ``(K, ...)`` updated in place.
        lrs: Learning rate per tensor name.
        betas: (β1, β2).
        eps: ε of the denominator.
        weight_decay: Decoupled weight decay.
    """

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        lrs: Mapping[str, float],
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params, self.lrs = dict(params), dict(lrs)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        first = next(iter(self.params.values()))
        self.steps = torch.zeros(
            first.shape[0], dtype=torch.float64, device=first.device
        )
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}

    @torch.no_grad()
    def step(self, grads: Mapping[str, torch.Tensor], active: torch.Tensor) -> None:
        """One step for the ``active`` clients (a ``(K,)`` bool mask).

        A tensor missing from ``grads`` (off the loss's path) is left alone,
        as torch's AdamW leaves a parameter whose gradient is ``None``; the
        one step count per client assumes a tensor is on the path at every
        step or at none.
        """
        self.steps += active.double()
        b1, b2 = self.beta1, self.beta2
        safe = self.steps.clamp(min=1)
        bc1 = (1 - b1**safe).float()  # (K,)
        bc2_sqrt = (1 - b2**safe).sqrt().float()  # (K,)
        for name, p in self.params.items():
            lr = self.lrs[name]
            if lr == 0.0 or name not in grads:  # torch skips a None gradient
                continue
            view = (-1,) + (1,) * (p.ndim - 1)
            on = active.view(view)
            g = grads[name]
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.copy_(torch.where(on, m + (g - m) * (1 - b1), m))
            v.copy_(torch.where(on, v * b2 + g * g * (1 - b2), v))
            decayed = p * (1 - lr * self.weight_decay)
            denom = (v.sqrt() / bc2_sqrt.view(view)) + self.eps
            updated = decayed - (lr / bc1).view(view) * m / denom
            p.copy_(torch.where(on, updated, p))


def stacked_adamw(
    model: AdapterClassifier, stacked: Mapping[str, torch.Tensor], cfg: ClientSection
) -> StackedAdamW:
    """:class:`StackedAdamW` with :func:`~fedpeft.client.steps.build_optimizer`'s
    learning rates: ``head_lr`` for the head's tensors, ``lr`` for the rest."""
    head = model.head_prefix
    lrs = {n: cfg.head_lr if n.startswith(head) else cfg.lr for n in stacked}
    return StackedAdamW(stacked, lrs, weight_decay=cfg.weight_decay)
