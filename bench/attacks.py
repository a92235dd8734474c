"""Poisoning attacks against robust aggregation rules (docs/benchmarks.md,
"Poisoning clients and robust aggregation").

Every cell is one federated run (α, attack, attacker fraction, rule, seed);
its final test accuracy is cached under ``--out/cells/`` as soon as it
finishes, so an interrupted grid resumes where it stopped.

Task (the whole grid must fit a few hours on 2 cores): Rotten Tomatoes, 1,200
training / 300 test snippets, 20 clients of 60 (``dirichlet-balanced``: equal
sizes, label mix Dir(α)), every client in every round (so a fraction f of
attackers is f of every round), 5 rounds of 1 local epoch, the default soft
prompt, FedAvg, the default class-means warm start (round 0 is honest), bf16
backbone. The server's default screening (``federation.update_norm_ratio =
20``) stays on for every rule. Attacks use the default magnitude
``attack.scale = 10``.

``--warm-start rule`` sets ``robust.warm_start = rule`` for every rule but
``mean`` (round 0's class means estimated by the rule instead of summed); its
cells are keyed apart, so run it into its own ``--out``.

    python bench/attacks.py [--alphas 0.5 0.1] [--seeds 0 1 2]
        [--attacks ...] [--fractions 0.1 0.3] [--rules ...]
        [--warm-start mean|rule] [--report-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from results_io import merge_results, write_json

from fedpeft.config import load_config
from fedpeft.config_threats import ATTACKS, ROBUST_RULES
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment, build_experiment

BASE = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=1200",
    "data.max_test=300",
    "federation.num_clients=20",
    "federation.rounds=5",
    "federation.eval_every=5",
    "federation.eval_clients=false",
    "strategy.fraction_fit=1.0",
    "partition.method=dirichlet-balanced",
    "model.precision=bf16",
    "baselines.run=[]",
]
RULE_OPTIONS = {
    "trimmed-mean": ["robust.trim=0.3"],
    "krum": ["robust.byzantine=0.3"],
    "multi-krum": ["robust.byzantine=0.3"],
}


def cell_overrides(
    alpha: float, attack: str, fraction: float, rule: str, warm_start: str = "mean"
) -> list[str]:
    out = [f"partition.alpha={alpha}", f"robust.rule={rule}"]
    out += RULE_OPTIONS.get(rule, [])
    if warm_start != "mean" and rule != "mean":
        out.append(f"robust.warm_start={warm_start}")
    if attack != "none":
        out += [f"attack.kind={attack}", f"attack.fraction={fraction}"]
    return out


def run_cell(
    exp: Experiment,
    alpha: float,
    attack: str,
    fraction: float,
    rule: str,
    seed: int,
    warm_start: str = "mean",
) -> dict[str, Any]:
    overrides = [
        *BASE,
        f"seed={seed}",
        *cell_overrides(alpha, attack, fraction, rule, warm_start),
    ]
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    run = FederatedRun(dataclasses.replace(exp, config=cfg))
    result = run.run()
    last = result.history[-1]
    return {
        "alpha": alpha,
        "attack": attack,
        "fraction": fraction,
        "rule": rule,
        "seed": seed,
        "warm_start": warm_start,
        "attackers": sorted(run.attackers),
        "round0_accuracy": result.history[0]["test_accuracy"],
        "final_accuracy": last["test_accuracy"],
        "final_macro_f1": last["test_macro_f1"],
        "rejected": sum(len(r.get("rejected_clients", [])) for r in result.history),
        "seconds": time.perf_counter() - started,
    }


def experiment_for(alpha: float, seed: int) -> Experiment:
    """The shared data and backbone of one (α, seed) — every cell reuses it."""
    return build_experiment(
        load_config(None, [*BASE, f"seed={seed}", f"partition.alpha={alpha}"])
    )


def report(cells: Sequence[dict[str, Any]], rules: Sequence[str]) -> str:
    """Markdown: per α, rows attack × fraction, columns rules, mean ± std over seeds."""
    lines = []
    for alpha in sorted({c["alpha"] for c in cells}, reverse=True):
        lines.append(
            f"\nDir({alpha}), final test accuracy, mean ± std over seeds (n):\n"
        )
        lines.append("| attack | attackers | " + " | ".join(rules) + " |")
        lines.append("|---|---|" + "---|" * len(rules))
        rows = sorted(
            {(c["attack"], c["fraction"]) for c in cells if c["alpha"] == alpha},
            key=lambda r: (r[0] != "none", r[0], r[1]),
        )
        for attack, fraction in rows:
            out = []
            for rule in rules:
                accs = [
                    c["final_accuracy"]
                    for c in cells
                    if (c["alpha"], c["attack"], c["fraction"], c["rule"])
                    == (alpha, attack, fraction, rule)
                ]
                if not accs:
                    out.append("—")
                elif len(accs) == 1:
                    out.append(f"{accs[0]:.3f} (1)")
                else:
                    mean, std = np.mean(accs), np.std(accs, ddof=1)
                    out.append(f"{mean:.3f} ± {std:.3f} ({len(accs)})")
            pct = "0%" if attack == "none" else f"{fraction:.0%}"
            lines.append(f"| {attack} | {pct} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def paired_report(cells: Sequence[dict[str, Any]], rules: Sequence[str]) -> str:
    """Markdown: per α, each attack cell minus the same rule's clean cell of
    the same seed, in points, mean ± sd over seeds (n)."""
    final = {
        (c["alpha"], c["attack"], c["fraction"], c["rule"], c["seed"]): c[
            "final_accuracy"
        ]
        for c in cells
    }
    lines = []
    for alpha in sorted({c["alpha"] for c in cells}, reverse=True):
        lines.append(f"\nDir({alpha}), points vs the same rule's clean run (paired):\n")
        lines.append("| attack | attackers | " + " | ".join(rules) + " |")
        lines.append("|---|---|" + "---|" * len(rules))
        rows = sorted(
            {
                (c["attack"], c["fraction"])
                for c in cells
                if c["alpha"] == alpha and c["attack"] != "none"
            }
        )
        for attack, fraction in rows:
            out = []
            for rule in rules:
                diffs = [
                    100 * (acc - final[(alpha, "none", 0.0, rule, seed)])
                    for (a, at, f, r, seed), acc in final.items()
                    if (a, at, f, r) == (alpha, attack, fraction, rule)
                    and (alpha, "none", 0.0, rule, seed) in final
                ]
                if not diffs:
                    out.append("—")
                elif len(diffs) == 1:
                    out.append(f"{diffs[0]:+.1f} (1)")
                else:
                    sd = float(np.std(diffs, ddof=1))
                    out.append(f"{np.mean(diffs):+.1f} ± {sd:.1f} ({len(diffs)})")
            lines.append(f"| {attack} | {fraction:.0%} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--attacks", nargs="+", default=list(ATTACKS[1:]), choices=ATTACKS[1:]
    )
    p.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.1])
    p.add_argument(
        "--rules", nargs="+", default=list(ROBUST_RULES), choices=ROBUST_RULES
    )
    p.add_argument("--out", type=Path, default=Path("runs/attacks"))
    p.add_argument("--results", type=Path, default=Path("bench/results/attacks.json"))
    p.add_argument("--warm-start", choices=["mean", "rule"], default="mean")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()

    cells_dir = args.out / "cells"
    todo = [("none", 0.0)] + [(a, f) for f in args.fractions for a in args.attacks]
    for seed in args.seeds:  # seed-major: every cell gets its first seed early
        for alpha in args.alphas:
            exp = None
            for attack, fraction in todo:
                for rule in args.rules:
                    key = f"a{alpha}-{attack}-f{fraction}-{rule}-s{seed}"
                    if args.warm_start != "mean" and rule != "mean":
                        key += f"-ws{args.warm_start}"
                    path = cells_dir / f"{key}.json"
                    if path.exists() or args.report_only:
                        continue
                    exp = exp or experiment_for(alpha, seed)
                    cell = run_cell(
                        exp, alpha, attack, fraction, rule, seed, args.warm_start
                    )
                    write_json(path, cell)
                    print(
                        f"{key}: {cell['final_accuracy']:.3f} (round 0 "
                        f"{cell['round0_accuracy']:.3f}, {cell['seconds']:.0f} s)",
                        flush=True,
                    )
    cells = [json.loads(f.read_text()) for f in sorted(cells_dir.glob("*.json"))]
    print(report(cells, args.rules))
    print(paired_report(cells, args.rules))
    merge_results(args.results, {"poisoning": cells})


if __name__ == "__main__":
    main()
