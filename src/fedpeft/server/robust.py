"""Robust aggregation: the round's update estimated so that a minority of
faulty or malicious clients cannot steer it, around any strategy.

The strategy keeps its server step (FedAvg's, FedAdam's, momentum) and, where
the rule still averages, its client weights:

* ``median`` / ``trimmed-mean``: the coordinate-wise estimate replaces the
  weighted mean; client weights are ignored (a claimed example count is itself
  an attack surface), then ``strategy.step``.
* ``krum`` / ``multi-krum``: the strategy's merge over the selected updates only.
* ``norm-bound``: the strategy's merge over updates clipped to
  ``norm_ratio ×`` the round's median norm (or a fixed ``max_norm``).

All of them read every update, so none runs under secure aggregation; there
only a bound each client applies to its own update before masking is possible
(:class:`~fedpeft.server.aggregators.SecureAggregator`'s ``client_bound``),
and it holds only for clients that run the protocol's code.

Round 0's warm start is merged by the plain sum (or n_k-weighted mean) unless
``robust.warm_start = "rule"``: then each class's mean feature in the
class-means / lda statistics is the rule's robust estimate over the clients
holding that class (:func:`~fedpeft.aggregation.robust.robust_class_sums`);
the label-independent parts (sums of squares, Gram matrix) and the
calibration's NLL sums stay summed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpeft.aggregation import flatten, unflatten
from fedpeft.aggregation.class_means import CLASS_COUNT, CLASS_SUM
from fedpeft.aggregation.robust import (
    clip_rows,
    coordinate_median,
    krum_max_byzantine,
    krum_select,
    robust_class_sums,
    trim_count,
    trimmed_mean,
)
from fedpeft.config_threats import RobustSection
from fedpeft.server.aggregators import Metrics, PlainAggregator, agg_metrics
from fedpeft.strategies import Strategy
from fedpeft.types import ClientUpdate, Float64Array, Params

logger = logging.getLogger(__name__)


@dataclass
class RobustAggregator(PlainAggregator):
    """The server sees every update and merges a robust estimate of them."""

    options: RobustSection

    def merge(
        self,
        rnd: int,
        params: Params,
        updates: Sequence[ClientUpdate],
        strategy: Strategy,
    ) -> tuple[Params, Metrics]:
        o = self.options
        if o.rule == "mean" or not updates:
            return super().merge(rnd, params, updates, strategy)
        layout = updates[0].delta
        rows = np.stack([flatten(u.delta) for u in updates])
        stats: Metrics = {"robust_rule": o.rule}
        if o.rule in ("median", "trimmed-mean"):
            estimate = self._estimate(rows)
            if o.rule == "trimmed-mean":
                stats["robust_trimmed_each_end"] = trim_count(len(rows), o.trim)
            new, metrics = strategy.step(rnd, params, unflatten(estimate, layout))
            return new, {**agg_metrics(metrics), **stats}
        if o.rule in ("krum", "multi-krum"):
            kept, more = self._krum(rnd, rows)
            stats.update(more)
            stats["robust_kept_clients"] = [updates[i].client_id for i in kept]
            chosen = [updates[i] for i in kept]
            new, metrics = strategy.aggregate(rnd, params, chosen)
            return new, {**agg_metrics(metrics), **stats}
        bound = o.max_norm
        if bound <= 0:  # norm_ratio × the round's median norm
            bound = o.norm_ratio * float(np.median(np.linalg.norm(rows, axis=1)))
        if bound <= 0:  # every update is zero: nothing to bound
            return super().merge(rnd, params, updates, strategy)
        clipped, norms = clip_rows(rows, bound)
        bounded = [
            dataclasses.replace(u, delta=unflatten(row, layout))
            for u, row in zip(updates, clipped, strict=True)
        ]
        new, metrics = strategy.aggregate(rnd, params, bounded)
        stats.update(
            robust_bound=bound,
            robust_clipped_fraction=float(np.mean(norms > bound)),
        )
        return new, {**agg_metrics(metrics), **stats}

    def sum(
        self, rnd: int, arrays: Sequence[Params], clip_range: float = 0.0
    ) -> tuple[Params, Metrics]:
        """Σ arrays; with ``warm_start = "rule"``, class statistics get robust
        class means (module docstring)."""
        total, metrics = super().sum(rnd, arrays, clip_range)
        o = self.options
        if o.warm_start != "rule" or o.rule == "mean" or CLASS_SUM not in total:
            return total, metrics
        sums = robust_class_sums(
            np.stack([a[CLASS_SUM] for a in arrays]),
            np.stack([a[CLASS_COUNT] for a in arrays]),
            self._estimate,
        )
        total[CLASS_SUM] = sums.astype(total[CLASS_SUM].dtype)
        return total, {**metrics, "robust_warm_start": o.rule}

    def _estimate(self, rows: np.ndarray) -> Float64Array:
        """The rule's coordinate-wise estimate over ``rows`` (a round's updates,
        or one class's per-client means): the trimmed mean under
        ``trimmed-mean``, the median otherwise."""
        if self.options.rule == "trimmed-mean":
            return trimmed_mean(rows, self.options.trim)
        return coordinate_median(rows)

    def _krum(self, rnd: int, rows: np.ndarray) -> tuple[list[int], Metrics]:
        """Krum's (or Multi-Krum's) kept rows, with f and m."""
        o, k = self.options, len(rows)
        f = int(np.floor(o.byzantine * k + 1e-9))
        if f > krum_max_byzantine(k):
            logger.warning(
                "round %d: Krum needs K >= 2f + 3; with K = %d updates f is "
                "lowered from %d to %d",
                rnd,
                k,
                f,
                krum_max_byzantine(k),
            )
            f = krum_max_byzantine(k)
        keep = 1 if o.rule == "krum" else min(o.keep or k - f, k)
        return krum_select(rows, f, keep), {"robust_f": f, "robust_keep": keep}
