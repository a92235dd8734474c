"""Federated prompt tuning vs baselines across non-IID levels (docs/benchmarks.md).

Label skew is `dirichlet-balanced`: equal client sizes, class mix ~ Dir(α) per
client (plain per-class `dirichlet` cannot give 20 clients data at α = 0.1 with
two classes).

For each corpus and Dirichlet α it runs FedAvg, FedPrompt, FedProx and Dynamic
on the same partition and the same budget, plus the baselines: centralized
prompt tuning and the linear probe (once per corpus: they see the pooled data,
which does not depend on α), local-only and FedAvg full fine-tuning (per α).
Finished runs are skipped, so an interrupted benchmark continues where it
stopped. Results: bench/results/federated.json and a markdown table on stdout.

    python bench/federated.py [--corpora rotten-tomatoes 20newsgroups]
        [--alphas 0.1 0.5 10] [--strategies fedavg fedprompt fedprox dynamic]
        [--out runs/bench] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from results_io import cached_run

from fedpeft.engine.summary import convergence_target, rounds_to_reach
from fedpeft.rundir.sink import read_metrics

BASE = [
    "federation.num_clients=20",
    "federation.rounds=8",
    "federation.eval_every=1",
    "strategy.fraction_fit=0.2",
    "data.max_train=1600",
    "data.max_test=400",
    "model.max_length=64",
    "partition.method=dirichlet-balanced",
    "partition.min_size=20",
]
PER_CORPUS = {"20newsgroups": ["data.max_chars=1200"]}


def run_one(out: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    return cached_run([*BASE, *overrides, f"name={name}", f"output_dir={out}"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpora", nargs="+", default=["rotten-tomatoes", "20newsgroups"]
    )
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.5, 0.1, 10.0])
    parser.add_argument(
        "--strategies", nargs="+", default=["fedavg", "fedprompt", "fedprox", "dynamic"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: tabulate the runs already finished under --out",
    )
    parser.add_argument(
        "--full-ft-every-alpha",
        nargs="*",
        default=["rotten-tomatoes"],
        help="corpora whose full fine-tuning baseline runs at every alpha (others: "
        "at the first alpha only; it is the costliest baseline on 2 cores)",
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: list[dict[str, Any]] = []
    for corpus in args.corpora:
        common = [f"data.corpus={corpus}", *PER_CORPUS.get(corpus, []), *args.overrides]
        for i, alpha in enumerate(args.alphas):
            for strategy in args.strategies:
                baselines = []
                if strategy == args.strategies[0]:
                    baselines = ["local-only"]
                    if i == 0 or corpus in args.full_ft_every_alpha:
                        baselines.append("full-finetune")
                    if i == 0:
                        baselines = ["centralized", "linear-probe", *baselines]
                name = f"{corpus}-a{alpha:g}-{strategy}"
                if args.report_only:
                    path = args.out / name / "summary.json"
                    if path.exists():
                        results.append(json.loads(path.read_text()))
                    continue
                summary = run_one(
                    args.out,
                    name,
                    [
                        *common,
                        f"partition.alpha={alpha}",
                        f"strategy.name={strategy}",
                        f"baselines.run={json.dumps(baselines)}",
                    ],
                )
                results.append(summary)
    table = build_table(results, args.out)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated.json").write_text(json.dumps(table, indent=2))
    print(render(table))


def build_table(results: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """One row per (corpus, α, method), baselines included; rounds to the
    corpus' centralized accuracy − 1 point, counted from round 1."""
    central: dict[str, float] = {}
    probe: dict[str, float] = {}
    for s in results:
        base = s["baselines"]
        if "centralized" in base:
            central[s["corpus"]] = base["centralized"]["test_accuracy"]
        if "linear-probe" in base:
            probe[s["corpus"]] = base["linear-probe"]["test_accuracy"]
    rows = []
    for s in results:
        corpus, alpha = s["corpus"], s["alpha"]
        target = convergence_target(central.get(corpus))
        history = [
            r
            for r in read_metrics(out / s["name"] / "metrics.jsonl")
            if r["run"] == "federated"
        ]
        fed = s["federated"]
        rows.append(
            {
                "corpus": corpus,
                "alpha": alpha,
                "method": f"prompt + {s['strategy']}",
                "final_accuracy": fed["final_accuracy"],
                "best_accuracy": fed["best_accuracy"],
                "macro_f1": fed["final_macro_f1"],
                "rounds_to_target": _rounds(history, target),
                "bytes_per_client_round": fed["bytes_up_per_client_round"]
                + fed["bytes_down_per_client_round"],
            }
        )
        for name, metrics in s["baselines"].items():
            row = {
                "corpus": corpus,
                "alpha": alpha if name in ("local-only", "full-finetune") else None,
                "method": name,
                "final_accuracy": metrics["test_accuracy"],
                "best_accuracy": metrics.get("best_accuracy"),
                "macro_f1": metrics["test_macro_f1"],
                "rounds_to_target": None,
                "bytes_per_client_round": None,
            }
            if name == "full-finetune":
                per = fed["full_model_bytes"] * 2
                row["bytes_per_client_round"] = per
                curve = [
                    r
                    for r in read_metrics(out / s["name"] / "metrics.jsonl")
                    if r["run"] == "full-finetune"
                ]
                row["rounds_to_target"] = _rounds(curve, target)
            rows.append(row)
    for corpus in central:
        rows.append(
            {
                "corpus": corpus,
                "note": "reference",
                "centralized": central[corpus],
                "linear_probe": probe.get(corpus),
            }
        )
    return rows


def _rounds(history: list[dict[str, Any]], target: float | None) -> int | str | None:
    """Rounds to reach ``target``; "not reached" within the run; None if no target."""
    if target is None:
        return None
    reached = rounds_to_reach(history, target)
    return "not reached" if reached is None else reached


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| corpus | α | method | final acc | best acc | macro-F1 | rounds to "
        "centralized − 1 pt | bytes / client / round (up+down) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("note"):
            continue
        alpha = "—" if r["alpha"] is None else f"{r['alpha']:g}"
        best = "—" if r["best_accuracy"] is None else f"{r['best_accuracy']:.4f}"
        rounds = "—" if r["rounds_to_target"] is None else str(r["rounds_to_target"])
        nbytes = (
            "—"
            if r["bytes_per_client_round"] is None
            else f"{r['bytes_per_client_round'] / 1e3:,.1f} kB"
        )
        lines.append(
            f"| {r['corpus']} | {alpha} | {r['method']} | {r['final_accuracy']:.4f} "
            f"| {best} | {r['macro_f1']:.4f} | {rounds} | {nbytes} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
