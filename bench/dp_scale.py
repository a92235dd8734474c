"""Client-level DP where DP-FedAvg is meant to work: a thousand clients, a
hundred per round (docs/benchmarks.md, "Client-level DP at 1,000 clients").

Task: the tweets corpus (tweets-sentiment, 3 classes, 38k tweets; 2,000 held
out for test), 1,000 clients (``dirichlet-balanced``: equal sizes, label mix
Dir(1.0)), Poisson sampling at q = 0.1 (≈ 100 clients a round), the default
soft prompt with a zero-initialised head (the warm start reads raw data outside
the accounting), FedPrompt (equal weights, as DP-FedAvg assumes), one local
step of 16 examples per client and round, bf16 backbone, 48 tokens. Every ε
is at δ = 1e-5 over the run's rounds, RDP accounting of the Poisson-
subsampled Gaussian; σ is calibrated to the target. Clipping: fixed C, or
adaptive (Andrew et al. 2021; target quantile 0.5, η_C = 0.2, σ_b = m/20,
starting at C).

Each run is cached under ``--out/<name>.json`` when it ends.

    python bench/dp_scale.py [--epsilons 1 3 8] [--seeds 0] [--rounds 30]
        [--clip 0.1] [--adaptive] [--out runs/dp_scale]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from results_io import merge_results, write_json

from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment

DELTA = 1e-5


def base(rounds: int, seed: int) -> list[str]:
    return [
        "data.corpus=tweets-sentiment",
        "data.max_train=40000",
        "data.max_test=2000",
        "data.test_fraction=0.06",
        "model.max_length=48",
        "model.precision=bf16",
        "federation.num_clients=1000",
        f"federation.rounds={rounds}",
        "federation.sampling=poisson",
        "federation.eval_every=5",
        "federation.eval_clients=false",
        "strategy.fraction_fit=0.1",
        "strategy.min_fit_clients=1",
        "partition.method=dirichlet-balanced",
        "partition.alpha=1.0",
        "partition.min_size=10",
        "peft.head_init=zeros",
        "strategy.name=fedprompt",
        "client.head_lr=1e-2",
        "client.local_steps=1",
        "baselines.run=[]",
        f"seed={seed}",
    ]


def dp_option(epsilon: float, clip: float, adaptive: bool) -> str:
    extra = ", target_quantile=0.5" if adaptive else ""
    return (
        f"privacy.client_dp={{target_epsilon={epsilon}, clip_norm={clip}, "
        f"delta={DELTA}{extra}}}"
    )


def run_one(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    path = out / f"{name}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    started = time.perf_counter()
    result = FederatedRun(build_experiment(load_config(None, overrides))).run()
    evaluated = [r for r in result.history if "test_accuracy" in r]
    last = result.history[-1]
    row = {
        "name": name,
        "final_accuracy": evaluated[-1]["test_accuracy"],
        "final_macro_f1": evaluated[-1]["test_macro_f1"],
        "curve": [(r["round"], r["test_accuracy"]) for r in evaluated],
        "epsilon": last.get("epsilon"),
        "noise_multiplier": last.get("noise_multiplier"),
        "update_noise_multiplier": last.get("update_noise_multiplier"),
        "clip_norms": [r.get("clip_norm") for r in result.history[1:]],
        "clipped_fraction": [r.get("dp_clipped_fraction") for r in result.history[1:]],
        "clients_per_round": [len(r["clients"]) for r in result.history[1:]],
        "seconds": time.perf_counter() - started,
    }
    write_json(path, row)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clip", type=float, default=0.1)
    p.add_argument("--adaptive", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/dp_scale"))
    p.add_argument("--results", type=Path, default=Path("bench/results/dp_scale.json"))
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        common = base(args.rounds, seed)
        rows.append(run_one(f"none-r{args.rounds}-s{seed}", common, args.out))
        print(rows[-1]["name"], rows[-1]["final_accuracy"], flush=True)
        for eps in args.epsilons:
            kind = "adaptive" if args.adaptive else f"C{args.clip:g}"
            name = f"eps{eps:g}-{kind}-r{args.rounds}-s{seed}"
            extra = dp_option(eps, args.clip, args.adaptive)
            rows.append(run_one(name, [*common, extra], args.out))
            r = rows[-1]
            print(
                f"{name}: accuracy {r['final_accuracy']:.3f}, ε {r['epsilon']:.2f}, "
                f"σ {r['noise_multiplier']:.3f}, {r['seconds']:.0f} s",
                flush=True,
            )
    merge_results(args.results, {f"dp_scale_{r['name']}": r for r in rows})


if __name__ == "__main__":
    main()
