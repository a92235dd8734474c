"""Round 0 on the server: the warm start's messages and merges, shared by the
server algorithms.

* ``probe``: every client fits the head as a linear probe on its own features;
  the server takes the n_k-weighted mean of the heads (plain or secure).
* ``class-means``: every client sends per-class feature sums and counts, scaled
  by the public 1/Σn; the server sums them (plain or secure) and builds the
  head the pooled data would give; a second exchange (``calibrate``) sums each
  client's NLL per temperature and the server divides the head by the best
  one (:mod:`fedpeft.aggregation.class_means`).
* ``lda``: the same two exchanges; the statistics add each client's Gram
  matrix, the server builds one head per covariance shrinkage, and the second
  exchange scores every (shrinkage, temperature) pair on the clients'
  validation splits (:mod:`fedpeft.aggregation.lda`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fedpeft.aggregation.class_means import NLL_SUMS, calibrate_head, class_mean_head
from fedpeft.aggregation.lda import (
    FEATURE_GRAM,
    pick_head,
    shrunk_heads,
    split_candidates,
    with_candidates,
)
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.types import ClientUpdate, Params

WarmStart = Literal["probe", "class-means", "lda"]

STATS_RANGE = 64.0
"""Quantizer range of the scaled class statistics under secure aggregation:
each is a sum over a client's examples divided by Σn over the federation, so
|value| ≤ max |feature| for the sums, max feature² for the sum of squares
and ≤ 1 for the counts."""


NLL_RANGE = 1e4
"""Quantizer range of the scaled NLL sums (per-example NLL / Σn summed over a
client's examples: at most the largest per-example NLL)."""


def stats_config(total_examples: int) -> dict[str, float]:
    """The ``class-stats`` instruction's config: the public scale 1/Σn."""
    return {"stats_scale": 1.0 / max(total_examples, 1)}


def merge_probe_heads(
    aggregator: Aggregator, params: Params, heads: Sequence[ClientUpdate]
) -> tuple[Params, Metrics]:
    """``params`` with the n_k-weighted mean of the clients' probe heads."""
    mean, metrics = aggregator.weighted_mean(
        0, [h.delta for h in heads], [h.num_examples for h in heads]
    )
    return {**params, **mean}, metrics


def merge_class_stats(
    aggregator: Aggregator, params: Params, stats: Sequence[ClientUpdate]
) -> tuple[Params, Metrics]:
    """``params`` with the head built from the summed class statistics.

    Raises:
        ValueError: if no client sent statistics.
    """
    if not stats:
        raise ValueError("no client returned class statistics for the warm start")
    total, metrics = aggregator.sum(0, [s.delta for s in stats], STATS_RANGE)
    if FEATURE_GRAM in total:  # lda: the candidates ride on the calibration
        heads = shrunk_heads(total)
        return with_candidates({**params, **heads[-1]}, heads), metrics
    return {**params, **class_mean_head(total)}, metrics


def merge_calibration(
    aggregator: Aggregator, params: Params, sums: Sequence[ClientUpdate]
) -> tuple[Params, Metrics]:
    """``params`` with the head divided by the temperature whose summed NLL
    over every client is smallest (``lda``: the candidate head and
    temperature whose summed validation NLL is smallest; the candidates go).

    Raises:
        ValueError: if no client sent its sums.
    """
    if not sums:
        raise ValueError("no client returned calibration sums for the warm start")
    total, metrics = aggregator.sum(0, [s.delta for s in sums], NLL_RANGE)
    params, candidates = split_candidates(params)
    if candidates:
        head, shrinkage, t = pick_head(candidates, total[NLL_SUMS])
        extra = {"warm_start_temperature": t, "warm_start_shrinkage": shrinkage}
        return {**params, **head}, {**metrics, **extra}
    head = {k: v for k, v in params.items() if k.startswith("head.")}
    calibrated, temperature = calibrate_head(head, total[NLL_SUMS])
    return {**params, **calibrated}, {**metrics, "warm_start_temperature": temperature}
