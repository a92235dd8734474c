"""Privacy–utility on the default task: ε vs test accuracy (docs/benchmarks.md).

Default task (2,000 training / 600 test snippets, 10 clients, 6 rounds).
Client-level DP (DP-FedAvg, central noise, fixed-size client sampling, RDP) and
record-level DP (DP-SGD in every client) at several noise multipliers, next to
the same configuration without DP. Client-level DP needs peft.head_init other
than the (non-private) probe warm start, so every run here, the reference
included, starts from a zero head and uses FedPrompt (uniform weights, as the
DP-FedAvg analysis assumes).

    python bench/privacy_utility.py [--sigmas 0.5 1 2] [--out runs/privacy]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from fedpeft.config import load_config
from fedpeft.engine.runner import run_experiment

COMMON = [
    "peft.head_init=zeros",
    "strategy.name=fedprompt",
    "baselines.run=[]",
    "client.head_lr=1e-2",
]


def run(out: Path, name: str, extra: list[str]) -> dict[str, Any]:
    cfg = load_config(None, [*COMMON, *extra, f"name={name}", f"output_dir={out}"])
    if (cfg.run_dir / "summary.json").exists():
        summary = json.loads((cfg.run_dir / "summary.json").read_text())
    else:
        summary = run_experiment(cfg, resume=True)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").open()]
    last = [r for r in records if r["run"] == "federated"][-1]
    return {
        "name": name,
        "accuracy": summary["federated"]["final_accuracy"],
        "macro_f1": summary["federated"]["final_macro_f1"],
        "client_epsilon": last.get("epsilon"),
        "record_epsilon_max": last.get("record_epsilon_max"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--out", type=Path, default=Path("runs/privacy"))
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw the plot from bench/results/privacy_utility.json",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.plot_only:
        rows = json.loads(Path("bench/results/privacy_utility.json").read_text())
        plot(rows, Path("docs/privacy_utility.png"))
        return
    rows = [run(args.out, "no-dp", [])]
    for sigma in args.sigmas:
        rows.append(
            run(
                args.out,
                f"client-dp-z{sigma:g}",
                [
                    "privacy.client_dp="
                    f"{{noise_multiplier={sigma}, clip_norm=0.1, delta=1e-3}}"
                ],
            )
        )
        rows.append(
            run(
                args.out,
                f"record-dp-z{sigma:g}",
                [
                    "privacy.record_dp="
                    f"{{noise_multiplier={sigma}, clip_norm=1.0, delta=1e-4}}"
                ],
            )
        )
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/privacy_utility.json").write_text(json.dumps(rows, indent=1))
    plot(rows, Path("docs/privacy_utility.png"))
    print(
        "| run | client-level ε (δ=1e-3) | record-level ε, worst client (δ=1e-4) "
        "| test accuracy | macro-F1 |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        ce = "—" if r["client_epsilon"] is None else f"{r['client_epsilon']:.2f}"
        re_ = (
            "—" if r["record_epsilon_max"] is None else f"{r['record_epsilon_max']:.2f}"
        )
        print(
            f"| {r['name']} | {ce} | {re_} | {r['accuracy']:.4f} "
            f"| {r['macro_f1']:.4f} |"
        )


def _majority_share() -> float:
    """Accuracy of always predicting the most frequent test label."""
    import numpy as np

    from fedpeft.data import load_corpus

    cfg = load_config(None, COMMON)
    d = cfg.data
    labels = load_corpus(
        d.corpus, max_train=d.max_train, max_test=d.max_test
    ).test.labels
    return float(np.bincount(labels).max() / len(labels))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for key, label, marker in (
        ("client_epsilon", "client-level DP-FedAvg", "o"),
        ("record_epsilon_max", "record-level DP-SGD", "s"),
    ):
        pts = sorted((r[key], r["accuracy"]) for r in rows if r[key] is not None)
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label
            )
    ax.axhline(rows[0]["accuracy"], ls="--", color="gray", label="no DP")
    ax.axhline(_majority_share(), ls=":", color="black", label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel("ε (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Privacy–utility, Rotten Tomatoes, 10 clients, 6 rounds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
