"""Fitting the classification head as a linear probe on frozen features.

Used as a warm start before prompt tuning (LP-FT: Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution"): a soft
prompt trained against a random head first has to undo the head's noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.aggregation.class_means import pooled_head
from fedpeft.aggregation.lda import pooled_lda_head
from fedpeft.client.feature_cache import FeatureCache, Shards, pooled_features
from fedpeft.config import ClientSection
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


def labels_of(data: Shards) -> np.ndarray:
    """The class ids of ``data``'s examples, in order."""
    if isinstance(data, TokenizedDataset):
        return data.labels
    return np.concatenate([s.labels for s in data]) if data else np.zeros(0, np.int64)


def fit_linear_head(
    features: torch.Tensor,
    labels: np.ndarray,
    num_classes: int,
    max_iter: int = 100,
    l2: float = 1e-3,
    init: Params | None = None,
) -> Params:
    """L2-regularised softmax regression, solved with full-batch L-BFGS.

    Minimises ``mean CE(features @ W.T + b, labels) + (l2 / 2) * ‖W‖²``; the
    problem is convex, so the result hardly depends on ``init``.

    Args:
        features: ``(n, dim)`` inputs.
        labels: ``(n,)`` class ids.
        max_iter: L-BFGS iterations.
        l2: Weight-decay strength on ``W`` (not on ``b``).
        init: Starting head (e.g. the current global head); zeros if None.

    Returns:
        ``{"head.weight": (num_classes, dim), "head.bias": (num_classes,)}``.
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
    opt = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = features @ weight.T + bias
        loss = F.cross_entropy(logits, target) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return {
        "head.weight": weight.detach().numpy().copy(),
        "head.bias": bias.detach().numpy().copy(),
    }


def fit_head(
    model: AdapterClassifier,
    data: Shards,
    max_iter: int = 100,
    l2: float = 1e-3,
    precision: str = "auto",
    batch_size: int = 128,
    cache: FeatureCache | None = None,
) -> Params:
    """Fit ``model``'s head as a probe on its current features (model unchanged)."""
    feats = pooled_features(model, data, batch_size, precision, cache)
    init = {k: v for k, v in model.trainable_state().items() if k.startswith("head.")}
    return fit_linear_head(
        feats, labels_of(data), model.head.out_features, max_iter, l2, init
    )


def probe_start(
    model: AdapterClassifier,
    state: Params,
    data: Shards,
    cfg: ClientSection,
    precision: str = "auto",
    batch_size: int = 128,
    cache: FeatureCache | None = None,
) -> Params:
    """``state`` with its head refitted as a linear probe on ``data``'s features
    under ``state`` (an LP-FT warm start; ``model`` is left holding ``state``)."""
    model.load_trainable_state(state)
    head = fit_head(
        model, data, cfg.probe_iters, cfg.probe_l2, precision, batch_size, cache
    )
    return {**state, **head}


def warm_start(
    how: str,
    model: AdapterClassifier,
    state: Params,
    data: Shards,
    cfg: ClientSection,
    precision: str = "auto",
    val: Shards | None = None,
    batch_size: int = 128,
    cache: FeatureCache | None = None,
) -> Params:
    """``state`` with the head ``peft.head_init`` fits on ``data`` alone
    (``probe``: a linear probe; ``class-means``: the calibrated class-means head;
    ``lda``: the shrunk-covariance head, its shrinkage and temperature picked
    on ``val``; any other value: ``state`` unchanged). Baselines that see one
    data set use it; ``model`` is left holding ``state``. With the clients'
    shards as ``data`` and ``val`` and the run's ``cache``, the features the
    federated warm start computed are not computed again.

    Raises:
        ValueError: ``lda`` without validation examples.
    """
    if how == "probe":
        return probe_start(model, state, data, cfg, precision, batch_size, cache)
    if how in ("class-means", "lda"):
        model.load_trainable_state(state)
        feats = pooled_features(model, data, batch_size, precision, cache).numpy()
        labels, classes = labels_of(data), model.head.out_features
        if how == "class-means":
            return {**state, **pooled_head(feats, labels, classes)}
        if val is None or not len(labels_of(val)):
            raise ValueError(
                "the lda warm start picks its shrinkage on validation examples, "
                "and there are none; set partition.val_fraction > 0"
            )
        held_out = pooled_features(model, val, batch_size, precision, cache)
        head = pooled_lda_head(feats, labels, held_out.numpy(), labels_of(val), classes)
        return {**state, **head}
    return state
