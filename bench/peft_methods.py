"""PEFT methods side by side, FedPETuning-style (docs/benchmarks.md).

Same federation as bench/federated.py at Dirichlet α = 0.5 (20 clients,
dirichlet-balanced, 8 rounds, 4 clients per round, FedAvg, federated probe
warm start), one run per method and corpus. Prompt tuning and the full
fine-tuning baseline are the runs bench/federated.py already made (same
settings); they are reused if present. Peak client memory is measured in a
fresh subprocess per method: the growth of the process's peak RSS during one
client's local update (batch 16, 64 tokens) over the RSS after loading the
backbone and data, i.e. the training working set on top of the shared backbone.

    python bench/peft_methods.py [--corpora rotten-tomatoes 20newsgroups]
        [--methods prefix lora ia3 bitfit] [--out runs/bench] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from federated import BASE, PER_CORPUS, run_one

METHOD_OPTIONS: dict[str, list[str]] = {
    "prompt": [],
    "prefix": ["peft.prefix_length=10"],
    "lora": ["peft.rank=8", "peft.alpha=16"],
    "ia3": [],
    "bitfit": [],
}


def run_name(corpus: str, method: str) -> str:
    if method == "prompt":
        return f"{corpus}-a0.5-fedavg"  # made by bench/federated.py
    return f"{corpus}-a0.5-fedavg-{method}"


def measure_memory(corpus: str, method: str) -> dict[str, float]:
    """Peak RSS growth (MiB) of one local update, in a fresh process."""
    overrides = [
        *BASE,
        *PER_CORPUS.get(corpus, []),
        f"data.corpus={corpus}",
        f"peft.method={method}",
        *METHOD_OPTIONS.get(method, []),
    ]
    code = f"""
import json, resource, numpy as np
from fedpeft.config import load_config
from fedpeft.engine.experiment import build_experiment
from fedpeft.client.local import train_adapter
cfg = load_config(None, {overrides!r})
exp = build_experiment(cfg)
model = exp.new_adapter()
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
before = rss()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
train_adapter(model, exp.clients[0].train, cfg.client, np.random.default_rng(0))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
growth = peak - max(before, peak_before)
print(json.dumps({{"rss_mib": before, "peak_growth_mib": growth}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def row(corpus: str, method: str, summary: dict[str, Any]) -> dict[str, Any]:
    fed = summary["federated"]
    rounds = summary["rounds"]
    per_round = max(1, round(summary["num_clients"] * 0.2))
    return {
        "corpus": corpus,
        "method": method,
        "trainable": summary["trainable_parameters"],
        "bytes": fed["bytes_up_per_client_round"] + fed["bytes_down_per_client_round"],
        "full_bytes": 2 * fed["full_model_bytes"],
        "final_accuracy": fed["final_accuracy"],
        "macro_f1": fed["final_macro_f1"],
        "flops_per_client_round": fed["client_flops_total"] / (rounds * per_round),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--corpora", nargs="+", default=["rotten-tomatoes", "20newsgroups"]
    )
    parser.add_argument(
        "--methods", nargs="+", default=["prompt", "prefix", "lora", "ia3", "bitfit"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    results = Path("bench/results/peft_methods.json")
    rows: list[dict[str, Any]] = []
    memory = (
        json.loads(results.read_text()).get("memory", {}) if results.exists() else {}
    )
    for corpus in args.corpora:
        common = [f"data.corpus={corpus}", *PER_CORPUS.get(corpus, [])]
        for method in args.methods:
            name = run_name(corpus, method)
            path = args.out / name / "summary.json"
            if args.report_only or method == "prompt":
                if not path.exists():
                    print(f"  missing {path}: run bench/federated.py first")
                    continue
                summary = json.loads(path.read_text())
            else:
                summary = run_one(
                    args.out,
                    name,
                    [
                        *common,
                        "partition.alpha=0.5",
                        "strategy.name=fedavg",
                        f"peft.method={method}",
                        *METHOD_OPTIONS[method],
                        "baselines.run=[]",
                    ],
                )
            rows.append(row(corpus, method, summary))
            key = f"{corpus}/{method}"
            if not args.no_memory and not args.report_only and key not in memory:
                memory[key] = measure_memory(corpus, method)
                print(f"  memory {key}: {memory[key]}", flush=True)
        full = args.out / run_name(corpus, "prompt") / "summary.json"
        if full.exists():
            s = json.loads(full.read_text())
            ft = s["baselines"].get("full-finetune")
            if ft:
                client_rounds = s["rounds"] * max(1, round(s["num_clients"] * 0.2))
                rows.append(
                    {
                        "corpus": corpus,
                        "method": "full",
                        "trainable": s["backbone_parameters"],
                        "bytes": (ft["bytes_up_total"] + ft["bytes_down_total"])
                        / client_rounds,
                        "full_bytes": 2 * s["federated"]["full_model_bytes"],
                        "final_accuracy": ft["test_accuracy"],
                        "macro_f1": ft["test_macro_f1"],
                        "flops_per_client_round": ft["client_flops_total"]
                        / client_rounds,
                    }
                )
    if not args.no_memory and not args.report_only:
        for corpus in args.corpora:
            key = f"{corpus}/full"
            if key not in memory:
                memory[key] = measure_memory(corpus, "full")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"rows": rows, "memory": memory}, indent=2))
    print(render(rows, memory))


def render(rows: list[dict[str, Any]], memory: dict[str, Any]) -> str:
    lines = [
        "| corpus | method | trainable params | bytes / client / round (up+down) "
        "| reduction vs full FT | final acc | macro-F1 | client GFLOPs / round "
        "| peak client memory over backbone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = memory.get(f"{r['corpus']}/{r['method']}")
        mem_s = f"{mem['peak_growth_mib']:.0f} MiB" if mem else "—"
        lines.append(
            f"| {r['corpus']} | {r['method']} | {r['trainable']:,} "
            f"| {r['bytes'] / 1e3:,.1f} kB | {r['full_bytes'] / r['bytes']:,.0f}× "
            f"| {r['final_accuracy']:.4f} | {r['macro_f1']:.4f} "
            f"| {r['flops_per_client_round'] / 1e9:,.0f} | {mem_s} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
