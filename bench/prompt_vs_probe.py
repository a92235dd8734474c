"""Does centralized prompt tuning beat the tuned linear probe here at all?
(docs/benchmarks.md, "Prompt tuning against the linear probe").

The label-skew issue asks the federated run at Dir(0.1) to end "never below
the linear probe". This script measures whether the centralized reference can:
centralized prompt tuning on the pooled data of the label-skew grid (same
corpora, subsample, seeds and model as ``bench/label_skew.py``), started from
the linear-probe head (LP-FT), trained for 4x the grid's example budget and
evaluated after every round-equivalent (one federated round's examples), so
the 1x point is the grid's reference. Next to it: the tuned linear probe, the
binomial standard error of one accuracy on the 300-example test set, and the
largest drop after round 2 below the previous best (the criterion's stability
statistic) of the centralized curve itself.

Variants: the library's default learning rates (soft prompt 3e-3, head 1e-3)
and a lower pair (1e-3, 3e-4), to see whether the step size is what keeps
prompt tuning below the probe.

    python bench/prompt_vs_probe.py [--corpora ...] [--seeds 0 1 2]
        [--variants default low-lr] [--out runs/prompt_vs_probe]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from label_skew import CORPORA, Cell, example_budget
from results_io import merge_results, write_json

from fedpeft.baselines.centralized import run_centralized
from fedpeft.baselines.probe import run_linear_probe
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment

VARIANTS = {
    "default": [],
    "low-lr": ["client.lr=1e-3", "client.head_lr=3e-4"],
}
MULTIPLE = 4
"""Budget: this many times the label-skew grid's federated example budget."""


def worst_drop(curve: Sequence[float], after: int = 2) -> float:
    """Largest fall below the best earlier value, over rounds > ``after``
    (round 0 is the first entry), in accuracy units."""
    drops = [max(curve[:r]) - curve[r] for r in range(after + 1, len(curve))]
    return max([0.0, *drops])


def run_one(corpus: str, seed: int, variant: str, out: Path) -> dict[str, Any]:
    path = out / "cells" / f"{corpus}__{variant}__s{seed}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    started = time.perf_counter()
    cell = Cell(corpus, "dirichlet-balanced", 0.1, "fedavg", "probe", seed)
    cfg = load_config(None, [*cell.overrides(), *VARIANTS[variant]])
    exp = build_experiment(cfg)
    fed = cfg.federation
    budget = example_budget(exp)
    curve = run_centralized(exp, MULTIPLE * budget, MULTIPLE * fed.rounds)
    result = {
        "corpus": corpus,
        "seed": seed,
        "variant": variant,
        "budget_examples": budget,
        "rounds_per_budget": fed.rounds,
        "test_examples": len(exp.test),
        "curve": [r["test_accuracy"] for r in curve],
        "linear_probe": run_linear_probe(exp)["test_accuracy"],
        "seconds": time.perf_counter() - started,
    }
    write_json(path, result)
    print(
        f"{corpus} {variant} s{seed}: probe {result['linear_probe']:.3f}, "
        f"1x {result['curve'][fed.rounds]:.3f}, {MULTIPLE}x {result['curve'][-1]:.3f} "
        f"({result['seconds']:.0f} s)",
        flush=True,
    )
    return result


def summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per (corpus, variant): mean and sample sd over seeds of each statistic,
    in points."""
    out: dict[str, Any] = {}
    for key in sorted({(r["corpus"], r["variant"]) for r in runs}):
        rows = [r for r in runs if (r["corpus"], r["variant"]) == key]
        k = rows[0]["rounds_per_budget"]
        stats = {
            "probe": [r["linear_probe"] for r in rows],
            "round0": [r["curve"][0] for r in rows],
            "1x": [r["curve"][k] for r in rows],
            f"{MULTIPLE}x": [r["curve"][-1] for r in rows],
            "best": [max(r["curve"][1:]) for r in rows],
            "1x-probe": [r["curve"][k] - r["linear_probe"] for r in rows],
            f"{MULTIPLE}x-probe": [r["curve"][-1] - r["linear_probe"] for r in rows],
            "worst_drop_1x": [worst_drop(r["curve"][: k + 1]) for r in rows],
            f"worst_drop_{MULTIPLE}x": [worst_drop(r["curve"]) for r in rows],
        }
        n = rows[0]["test_examples"]
        p = float(np.mean(stats["probe"]))
        out[f"{key[0]}/{key[1]}"] = {
            "seeds": len(rows),
            "test_examples": n,
            "binomial_se_points": 100 * math.sqrt(p * (1 - p) / n),
            **{name: _points(v) for name, v in stats.items()},
        }
    return out


def _points(values: Sequence[float]) -> list[float]:
    """[mean, sample sd] in points, one decimal."""
    v = 100 * np.asarray(values, dtype=float)
    return [round(float(v.mean()), 1), round(float(v.std(ddof=1)), 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS)
    )
    parser.add_argument("--out", type=Path, default=Path("runs/prompt_vs_probe"))
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results/prompt_vs_probe.json")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs = [
        run_one(corpus, seed, variant, args.out)
        for variant in args.variants
        for seed in args.seeds
        for corpus in args.corpora
    ]
    table = summary(runs)
    print(json.dumps(table, indent=1))
    merge_results(args.results, {"runs": runs, "summary": table})


if __name__ == "__main__":
    main()
