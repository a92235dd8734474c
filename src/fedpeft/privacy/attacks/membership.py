"""Membership inference on a released adapter.

* Loss threshold (Yeom et al. 2018): score = −CE(f(x), y); members were fit.
* LiRA (Carlini et al. 2022), online: shadow adapters are trained on random
  halves of a pool that holds the target's members and non-members; for each
  example the logit-scaled confidence φ = log p_y − log(1 − p_y) under the
  shadows that saw it (IN) and did not (OUT) gives two Gaussians, and the
  score is the log-likelihood ratio of the target's φ. With few shadows the
  variances are pooled over examples (Carlini et al.'s fixed-variance variant).

Success: the ROC AUC of the scores, and the TPR at a low FPR.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fedpeft.types import Float64Array


def _log_softmax(logits: np.ndarray) -> Float64Array:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), np.float64)


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> Float64Array:
    """−CE per example (higher: more likely a member)."""
    lp = _log_softmax(logits)
    return lp[np.arange(len(lp)), np.asarray(labels, np.int64)]


def confidence(logits: np.ndarray, labels: np.ndarray) -> Float64Array:
    """LiRA's φ = log p_y − log(1 − p_y), computed stably from the logits."""
    lp = _log_softmax(logits)
    idx = np.arange(len(lp))
    y = np.asarray(labels, np.int64)
    own = lp[idx, y]
    others = lp.copy()
    others[idx, y] = -np.inf
    rest = np.logaddexp.reduce(others, axis=1)
    return np.asarray(own - rest, np.float64)


def lira_scores(
    target: np.ndarray, shadows: np.ndarray, shadow_in: np.ndarray
) -> Float64Array:
    """Online LiRA with pooled variances.

    Args:
        target: ``(n,)`` φ of every example under the target model.
        shadows: ``(S, n)`` φ under each shadow model.
        shadow_in: ``(S, n)`` bool, whether shadow s trained on example i.

    Returns:
        ``(n,)`` log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²).

    Raises:
        ValueError: if an example has no IN or no OUT shadow.
    """
    phi = np.asarray(shadows, np.float64)
    ins = np.asarray(shadow_in, bool)
    n_in, n_out = ins.sum(0), (~ins).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError(
            "every example needs at least one IN and one OUT shadow; train more "
            "shadow adapters"
        )
    mu_in = np.where(ins, phi, 0).sum(0) / n_in
    mu_out = np.where(~ins, phi, 0).sum(0) / n_out
    var_in = max(float(np.where(ins, (phi - mu_in) ** 2, 0).sum() / ins.sum()), 1e-6)
    var_out = max(
        float(np.where(~ins, (phi - mu_out) ** 2, 0).sum() / (~ins).sum()), 1e-6
    )
    t = np.asarray(target, np.float64)
    log_in = -0.5 * ((t - mu_in) ** 2 / var_in + np.log(var_in))
    log_out = -0.5 * ((t - mu_out) ** 2 / var_out + np.log(var_out))
    return np.asarray(log_in - log_out, np.float64)


def roc_auc(scores: np.ndarray, members: np.ndarray) -> float:
    """P(score of a random member > a random non-member), ties counted ½.

    Raises:
        ValueError: without both members and non-members.
    """
    m = np.asarray(members, bool)
    if m.all() or not m.any():
        raise ValueError("AUC needs both members and non-members")
    return float(roc_auc_score(m, np.asarray(scores, np.float64)))


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr: float = 0.01) -> float:
    """The fraction of members flagged at the threshold that flags ``fpr`` of
    the non-members."""
    s = np.asarray(scores, np.float64)
    m = np.asarray(members, bool)
    threshold = np.quantile(s[~m], 1.0 - fpr)
    return float(np.mean(s[m] > threshold))
