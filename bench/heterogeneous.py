"""Heterogeneous devices: LoRA sizes allocated by device profile (docs/benchmarks.md).

The federation of bench/federated.py (Rotten Tomatoes, 20 clients,
dirichlet-balanced α = 0.5, 8 rounds, 4 clients a round, probe warm start)
with LoRA, on a population of devices drawn from the ``tiers`` distribution
(30% phones, 50% laptops, 20% servers). The menu mixes rank and depth, since
on a 6-layer backbone the rank hardly changes a client's compute:

    r2 on the top layer, r4 on the top 2, r8 on the top 4, r16 on all 6.

A round deadline (default 12 s of predicted compute + transfer on the
device's own speed and bandwidth, :func:`fedpeft.devices.round_time`) decides
who fits what. Runs:

* ``fixed-largest``: everyone r16@all (FedAvg); devices that miss the deadline
  are excluded, the usual one-size-fits-all setup;
* ``fixed-smallest``: everyone r2@top1 (FedAvg); nobody is excluded;
* ``largest-fit`` + HetLoRA / FlexLoRA / FFA-LoRA / FedAvg-of-padded: each
  device gets the largest option that fits it.

Reported per run: test accuracy and macro-F1, clients allowed to train, the
final global model's mean validation accuracy on the clients that
``fixed-largest`` excludes and on the others, mean bytes per client-round,
measured client FLOPs per client-round. Results: bench/results/heterogeneous.json.

    python bench/heterogeneous.py [--deadline 20] [--rounds 8] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from federated import BASE

from fedpeft.config import load_config
from fedpeft.devices.plan import DevicePlan, plan_devices
from fedpeft.devices.profiles import GIB
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.server.mixed_lora import LoraSize

MENU = (LoraSize(2, 1), LoraSize(4, 2), LoraSize(8, 4), LoraSize(16, 0))
RUNS = {
    # name: (allocation policy, fixed menu index, aggregation rule)
    "fixed-largest": ("fixed", -1, "fedavg"),
    "fixed-smallest": ("fixed", 0, "fedavg"),
    "largest-fit + hetlora": ("largest-fit", -1, "hetlora"),
    "largest-fit + flexlora": ("largest-fit", -1, "flexlora"),
    "largest-fit + ffa": ("largest-fit", -1, "ffa"),
    "largest-fit + fedavg-padded": ("largest-fit", -1, "fedavg"),
}
RESULTS = Path("bench/results/heterogeneous.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deadline", type=float, default=12.0)
    parser.add_argument("--profiles", default="tiers")
    parser.add_argument("--corpus", default="rotten-tomatoes")
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--plan", action="store_true", help="print the allocation and train nothing"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.report_only:
        print(render(stored))
        return
    cfg = load_config(
        None,
        [
            *BASE,
            f"data.corpus={args.corpus}",
            "partition.alpha=0.5",
            "peft.method=lora",
            "peft.alpha=16",
            f"devices.profiles={args.profiles}",
            f"devices.deadline_s={args.deadline}",
            f"devices.menu={json.dumps([f'{s.rank}@{s.layers}' for s in MENU])}",
        ],
    )
    exp = build_experiment(cfg)
    n = cfg.federation.num_clients

    def plan(policy: str, index: int) -> DevicePlan:
        devices = cfg.devices.model_copy(
            update={"policy": policy, "fixed_index": index}
        )
        return plan_devices(
            dataclasses.replace(exp, config=cfg.model_copy(update={"devices": devices}))
        )

    plans = {name: plan(policy, index) for name, (policy, index, _) in RUNS.items()}
    weak = [
        k
        for k, c in enumerate(plans["fixed-largest"].allocation.clients)
        if not c.participates
    ]
    fit = plans["largest-fit + hetlora"]
    stored.update(
        deadline_s=args.deadline,
        weak_clients=weak,
        profiles=[
            {
                "client": k,
                "tier": p.tier,
                "memory_gib": p.memory_bytes / GIB,
                "gflops_per_s": p.speed / 1e9,
                "uplink_mb_s": p.uplink_bytes_per_s / 1e6,
                "largest_fit": size.label if (size := fit.sizes[k]) else None,
                "predicted_s": fit.predicted_seconds(k),
            }
            for k, p in enumerate(fit.profiles)
        ],
    )
    if args.plan:
        for row in stored["profiles"]:
            times = ", ".join(f"{k} {v:.1f}s" for k, v in row["predicted_s"].items())
            print(
                f"{row['client']:>2} {row['tier']:<7} {row['memory_gib']:5.1f} GiB "
                f"{row['gflops_per_s']:7.1f} GFLOP/s  fit={row['largest_fit']}  "
                f"{times}"
            )
        return
    runs = stored.setdefault("runs", {})
    for name in args.only:
        policy, _, rule = RUNS[name]
        alloc, sizes = plans[name].allocation, plans[name].sizes
        started = time.perf_counter()
        result = FederatedRun(exp, sizes=sizes, rule=rule).run()
        last = result.history[-1]
        trained = result.history[1:]
        client_rounds = sum(len(r["accepted_clients"]) for r in trained)
        accs = np.array([result.client_val_accuracy[k] for k in range(n)])
        others = [k for k in range(n) if k not in weak]
        runs[name] = {
            "policy": policy,
            "rule": rule,
            "allowed": alloc.summary().participating,
            "excluded": alloc.summary().excluded,
            "sizes": [s.label if s else None for s in sizes],
            "test_accuracy": last["test_accuracy"],
            "test_macro_f1": last["test_macro_f1"],
            "curve": [r["test_accuracy"] for r in result.history],
            "weak_val_accuracy": float(accs[weak].mean()) if weak else None,
            "other_val_accuracy": float(accs[others].mean()),
            "bytes_per_client_round": sum(
                r["bytes_up"] + r["bytes_down"] for r in trained
            )
            / max(client_rounds, 1),
            "gflops_per_client_round": sum(r["client_flops_total"] for r in trained)
            / max(client_rounds, 1)
            / 1e9,
            "max_predicted_round_s": alloc.summary().max_time_s,
            "seconds": time.perf_counter() - started,
        }
        print(
            f"  {name}: {last['test_accuracy']:.4f} ({runs[name]['seconds']:.0f} s)",
            flush=True,
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(stored, indent=2))
    print(render(stored))


def render(stored: dict[str, Any]) -> str:
    weak = stored.get("weak_clients", [])
    lines = [
        f"Deadline {stored.get('deadline_s')} s; clients the largest fixed size "
        f"excludes: {len(weak)} ({', '.join(map(str, weak))})",
        "",
        "| run | rule | clients allowed | test acc (final) | test acc, mean of the "
        "last 3 rounds | macro-F1 | val acc, excluded-by-fixed clients | val acc, "
        "others | kB / client-round | GFLOPs / client-round | slowest predicted "
        "round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in stored.get("runs", {}).items():
        weak_acc = (
            "—" if r["weak_val_accuracy"] is None else (f"{r['weak_val_accuracy']:.4f}")
        )
        lines.append(
            f"| {name} | {r['rule']} | {r['allowed']}/{r['allowed'] + r['excluded']} "
            f"| {r['test_accuracy']:.4f} | {sum(r['curve'][-3:]) / 3:.4f} "
            f"| {r['test_macro_f1']:.4f} | {weak_acc} "
            f"| {r['other_val_accuracy']:.4f} "
            f"| {r['bytes_per_client_round'] / 1e3:,.1f} "
            f"| {r['gflops_per_client_round']:,.1f} "
            f"| {r['max_predicted_round_s']:.1f} s |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
