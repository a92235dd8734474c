"""The synthetic healthcare federation: hospitals as clients, judged overall
and on their worst demographic group (docs/benchmarks.md, "Synthetic
healthcare federation").

Data: ``synthetic-health`` (:mod:`fedpeft.data.health`; 24,000 admissions
from 8 hospitals), subsampled to ``--max-train`` training / ``--max-test``
test notes (seeded, stratified), 96 tokens (the notes are 77–102 tokens, the
labs at their end). Clients are the 8 hospitals
(``partition.method = "feature"``, ``group_column = "hospital"``): their
sizes differ 5×, their populations and adverse rates differ by construction.
Groups: sex, ethnicity, age group, region (``federation.eval_groups``).

Arms, each for every ``--seeds`` (the run seed: model init, shuffles; the
data and the split stay fixed):

* ``fedavg``: soft prompt + head, FedAvg, every hospital every round, with
  the baselines pooled (``centralized``), each hospital alone
  (``local-only``, averaged over hospitals) and the linear probe;
* ``dynamic``: the same with Dynamic's size- and distance-aware weights;
* ``secure-dp`` (first seed only): FedAvg under secure aggregation with
  record-level DP-SGD inside every hospital (ε = 8 per hospital, δ = 1e-5).

Tabular baselines on the same records (``risk_features``, logistic
regression): pooled, each hospital alone, and the true risk model (the Bayes
classifier: the ceiling).

Each finished run is skipped on a rerun (its summary.json is kept under
``--out``).

    python bench/healthcare.py [--seeds 0 1 2] [--rounds 6]
        [--max-train 2400] [--max-test 800] [--arms fedavg dynamic secure-dp]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from results_io import cached_run, merge_results

from fedpeft.data import load_corpus
from fedpeft.data.health import RISK_COEFFICIENTS, RISK_INTERCEPT, risk_features
from fedpeft.metrics import accuracy, group_metrics, macro_f1

GROUPS = ["sex", "ethnicity", "age_group", "region"]
ARMS: dict[str, list[str]] = {
    "fedavg": [
        "strategy.name=fedavg",
        'baselines.run=["centralized", "local-only", "linear-probe"]',
    ],
    "dynamic": ["strategy.name=dynamic", "baselines.run=[]"],
    "secure-dp": [
        "strategy.name=fedavg",
        "baselines.run=[]",
        "privacy.secagg=true",
        "privacy.record_dp.target_epsilon=8.0",
        "privacy.record_dp.delta=1e-5",
    ],
}


def base(args: argparse.Namespace) -> list[str]:
    return [
        "data.corpus=synthetic-health",
        f"data.max_train={args.max_train}",
        f"data.max_test={args.max_test}",
        "model.max_length=96",
        "model.precision=bf16",
        "federation.num_clients=8",
        f"federation.rounds={args.rounds}",
        "federation.eval_clients=false",
        "strategy.fraction_fit=1.0",
        "partition.method=feature",
        "partition.group_column=hospital",
        "partition.min_size=10",
        "federation.eval_groups=" + json.dumps(GROUPS),
    ]


def run_arm(args: argparse.Namespace, arm: str, seed: int) -> dict[str, Any]:
    name = f"{arm}-s{seed}"
    return cached_run(
        [
            *base(args),
            *ARMS[arm],
            f"seed={seed}",
            f"name={name}",
            f"output_dir={args.out}",
        ]
    )


def tabular(args: argparse.Namespace) -> dict[str, Any]:
    """Logistic regression on the records: pooled, each hospital alone
    (averaged), and the true risk model, on the same split as the runs."""
    from sklearn.linear_model import LogisticRegression

    corpus = load_corpus(
        "synthetic-health", max_train=args.max_train, max_test=args.max_test
    )
    train, test = corpus.train, corpus.test
    x_train, x_test = risk_features(train.metadata), risk_features(test.metadata)
    adverse = train.label_names.index("adverse")
    y_train = (train.labels == adverse).astype(int)

    def scores(is_adverse: np.ndarray) -> dict[str, Any]:
        preds = np.where(is_adverse == 1, adverse, 1 - adverse)
        groups = group_metrics(test.labels, preds, test.metadata, GROUPS)
        return {
            "test_accuracy": accuracy(test.labels, preds),
            "test_macro_f1": macro_f1(test.labels, preds, 2),
            **{f"test_{k}": v for k, v in groups.items()},
        }

    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
        return np.asarray(model.predict(x_test))

    alone = []
    hospitals = train.metadata["hospital"]
    for hospital in sorted(set(hospitals)):
        mine = hospitals == hospital
        alone.append(scores(fit(x_train[mine], y_train[mine])))
    coefficients = np.array(list(RISK_COEFFICIENTS.values()))
    bayes = (RISK_INTERCEPT + x_test @ coefficients > 0).astype(int)
    return {
        "pooled": scores(fit(x_train, y_train)),
        "alone_mean": {
            k: float(np.mean([a[k] for a in alone]))
            for k in alone[0]
            if k != "test_worst_group"
        },
        "alone_min_accuracy": float(min(a["test_accuracy"] for a in alone)),
        "true_risk": scores(bayes),
    }


def report(runs: Sequence[dict[str, Any]], table: dict[str, Any]) -> str:
    def cell(values: Sequence[float]) -> str:
        if not values:
            return "—"
        if len(values) == 1:
            return f"{values[0]:.3f} (1)"
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} ({len(values)})"

    rows: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        arm = run["name"].rsplit("-s", 1)[0]
        fed = run["federated"]
        rows.setdefault(f"federated, {arm}", []).append(
            {
                "acc": fed["final_accuracy"],
                "f1": fed["final_macro_f1"],
                "worst": fed["final_worst_group_accuracy"],
                "group": fed["final_worst_group"],
            }
        )
        if arm == "fedavg":
            for name, metrics in run["baselines"].items():
                rows.setdefault(name, []).append(
                    {
                        "acc": metrics["test_accuracy"],
                        "f1": metrics["test_macro_f1"],
                        "worst": metrics.get("test_worst_group_accuracy"),
                        "group": metrics.get(
                            "test_worst_group", "(mean over hospitals)"
                        ),
                    }
                )
    lines = [
        "| system | accuracy | macro-F1 | worst-group accuracy | worst group |",
        "|---|---|---|---|---|",
    ]
    for name, got in rows.items():
        worst = [g["worst"] for g in got if g["worst"] is not None]
        groups = sorted({g["group"] for g in got})
        lines.append(
            f"| {name} | {cell([g['acc'] for g in got])} | "
            f"{cell([g['f1'] for g in got])} | {cell(worst)} | {', '.join(groups)} |"
        )
    for name, key in (
        ("pooled", "pooled"),
        ("each hospital alone", "alone_mean"),
        ("true risk model", "true_risk"),
    ):
        m = table[key]
        lines.append(
            f"| tabular logistic regression, {name} | {m['test_accuracy']:.3f} | "
            f"{m['test_macro_f1']:.3f} | {m['test_worst_group_accuracy']:.3f} | "
            f"{m.get('test_worst_group', '(mean over hospitals)')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--max-train", type=int, default=2400)
    p.add_argument("--max-test", type=int, default=800)
    p.add_argument("--out", type=Path, default=Path("runs/healthcare"))
    p.add_argument(
        "--results", type=Path, default=Path("bench/results/healthcare.json")
    )
    args = p.parse_args()
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            if arm == "secure-dp" and seed != args.seeds[0]:
                continue
            runs.append(run_arm(args, arm, seed))
    table = tabular(args)
    print(report(runs, table))
    merge_results(
        args.results,
        {
            "runs": [
                {k: r[k] for k in ("name", "federated", "baselines", "privacy")}
                for r in runs
            ],
            "tabular": table,
        },
    )


if __name__ == "__main__":
    main()
