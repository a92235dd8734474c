"""Fitting the classification head as a linear probe on frozen features.

Used as a warm start before prompt tuning (LP-FT: Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution"): a soft
prompt trained against a random head first has to undo the head's noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


def pooled_features(
    model: AdapterClassifier,
    data: TokenizedDataset,
    batch_size: int = 128,
    precision: str = "bf16",
) -> torch.Tensor:
    """Features ``(n, dim)`` (float32) of ``model`` for every example of ``data``."""
    out = torch.empty(len(data), model.backbone.hidden_size)
    with torch.inference_mode(), autocast(precision):
        for idx, batch in data.length_sorted_batches(batch_size):
            out[torch.from_numpy(idx)] = model.features(batch).float()
    return out.clone()  # a normal tensor, usable under autograd


def fit_linear_head(
    features: torch.Tensor,
    labels: np.ndarray,
    num_classes: int,
    epochs: int,
    lr: float,
    init: Params | None = None,
) -> Params:
    """Full-batch AdamW on softmax regression; returns ``head.weight``/``head.bias``.

    Args:
        features: ``(n, dim)`` inputs.
        labels: ``(n,)`` class ids.
        init: Starting head (e.g. the current global head); zeros if None.
    """
    dim = features.shape[1]
    weight = torch.zeros(num_classes, dim)
    bias = torch.zeros(num_classes)
    if init is not None:
        weight = torch.from_numpy(init["head.weight"]).clone()
        bias = torch.from_numpy(init["head.bias"]).clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    target = torch.from_numpy(labels)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        loss = F.cross_entropy(features @ weight.T + bias, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {
        "head.weight": weight.detach().numpy().copy(),
        "head.bias": bias.detach().numpy().copy(),
    }


def fit_head(
    model: AdapterClassifier,
    data: TokenizedDataset,
    epochs: int,
    lr: float,
    precision: str = "bf16",
    batch_size: int = 128,
) -> Params:
    """Fit ``model``'s head as a probe on its current features (model unchanged)."""
    feats = pooled_features(model, data, batch_size, precision)
    init = {k: v for k, v in model.trainable_state().items() if k.startswith("head.")}
    return fit_linear_head(
        feats, data.labels, model.head.out_features, epochs, lr, init
    )
