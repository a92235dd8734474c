"""PEFT methods side by side, FedPETuning-style (docs/benchmarks.md).

Same federation as bench/federated.py at Dirichlet α = 0.5 (20 clients,
dirichlet-balanced, 8 rounds, 4 clients per round, FedAvg, federated probe
warm start), one run per method and corpus. Prompt tuning and the full
fine-tuning baseline are the runs bench/federated.py already made (same
settings) when present under --out; otherwise the prompt run is made here with
the full fine-tuning baseline attached (the federated part is seeded per
(round, client), so it is the same run). Rows already in
bench/results/peft_methods.json are kept unless --rerun names their method.

Peak client memory is measured in a fresh subprocess per method: a thread samples
the process's resident set every 2 ms during one client's local update (batch 16,
64 tokens); the figure is the peak minus the resident set just before, i.e. the
training working set on top of the loaded backbone and data. (The process's
lifetime ru_maxrss cannot be used: loading the model peaks higher than a
parameter-efficient update does.)

    python bench/peft_methods.py [--corpora rotten-tomatoes 20newsgroups]
        [--methods prompt prefix lora ia3 bitfit] [--out runs/bench]
        [--rerun METHOD ...] [--report-only] [--no-memory]
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
    return f"{corpus}-a0.5-fedavg-{method}"


def grid_run(out: Path, corpus: str) -> Path:
    """The prompt-tuning run bench/federated.py makes with the same settings."""
    return out / f"{corpus}-a0.5-fedavg" / "summary.json"


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
import gc, json, threading, time, numpy as np
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment
from fedpeft.client.local import train_adapter
cfg = load_config(None, {overrides!r})
exp = build_experiment(cfg)
model = exp.new_adapter()
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20
gc.collect()
before = rss()
peak = before
done = threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, rss())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
sampler.start()
train_adapter(model, exp.clients[0].train, cfg.client, np.random.default_rng(0))
done.set()
sampler.join()
print(json.dumps({{"rss_mib": before, "peak_growth_mib": max(rss(), peak) - before}}))
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


def full_row(corpus: str, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The FedAvg full fine-tuning baseline attached to a prompt run."""
    ft = summary["baselines"].get("full-finetune")
    if not ft:
        return None
    client_rounds = summary["rounds"] * max(1, round(summary["num_clients"] * 0.2))
    full_bytes = 2 * summary["federated"]["full_model_bytes"]
    return {
        "corpus": corpus,
        "method": "full",
        "trainable": summary["backbone_parameters"],
        # Per training round, like the other rows (the round-0 probe warm start,
        # which sends the model to every client once, is left out).
        "bytes": full_bytes,
        "full_bytes": full_bytes,
        "final_accuracy": ft["test_accuracy"],
        "macro_f1": ft["test_macro_f1"],
        "flops_per_client_round": ft["client_flops_total"] / client_rounds,
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
    parser.add_argument(
        "--rerun", nargs="*", default=[], help="methods whose stored rows are redone"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    results = Path("bench/results/peft_methods.json")
    stored = json.loads(results.read_text()) if results.exists() else {}
    memory: dict[str, Any] = stored.get("memory", {})
    kept = {
        (r["corpus"], r["method"]): r
        for r in stored.get("rows", [])
        if r["method"] not in args.rerun
    }
    for key in list(memory):
        if key.split("/")[1] in args.rerun:
            del memory[key]
    rows: list[dict[str, Any]] = []
    for corpus in args.corpora:
        common = [f"data.corpus={corpus}", *PER_CORPUS.get(corpus, [])]
        for method in [*args.methods, "full"]:
            if (corpus, method) in kept:
                rows.append(kept[(corpus, method)])
            elif args.report_only:
                print(f"  no stored row for {corpus}/{method}")
            elif method != "full":
                baselines = ["full-finetune"] if method == "prompt" else []
                grid = grid_run(args.out, corpus)
                if method == "prompt" and grid.exists():
                    summary = json.loads(grid.read_text())
                else:
                    summary = run_one(
                        args.out,
                        run_name(corpus, method),
                        [
                            *common,
                            "partition.alpha=0.5",
                            "strategy.name=fedavg",
                            f"peft.method={method}",
                            *METHOD_OPTIONS[method],
                            f"baselines.run={json.dumps(baselines)}",
                        ],
                    )
                rows.append(row(corpus, method, summary))
                if method == "prompt" and (ft := full_row(corpus, summary)):
                    kept[(corpus, "full")] = ft
            key = f"{corpus}/{method}"
            if not args.no_memory and not args.report_only and key not in memory:
                memory[key] = measure_memory(corpus, method)
                print(f"  memory {key}: {memory[key]}", flush=True)
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
