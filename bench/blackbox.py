"""Black-box prompt tuning: population batching and one small federated run.

``--speed``: candidates scored per second by the model service, a whole
CMA-ES population (P = 20 prompts of L = 50 tokens) on one draw of 32 Rotten
Tomatoes examples in one call, against the same 20 candidates one call each
(interleaved, medians over the repeats; MiniLM-L6, bf16).

``--run``: one federated black-box run on Rotten Tomatoes (few clients, short
search; the settings are printed) with its per-round accuracy, σ, bytes and
the service's bill per client.

    python bench/blackbox.py --speed [--repeats 5] [--run]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.blackbox.service import ModelService
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment

RESULTS = Path("bench/results/blackbox.json")
RUN = [
    "peft.method=blackbox",
    "data.max_train=400",
    "data.max_test=200",
    "model.max_length=48",
    "federation.num_clients=4",
    "federation.rounds=3",
    "strategy.fraction_fit=1.0",
    "partition.method=iid",
    "baselines.run=[]",
    "peft.popsize=10",
    "peft.iterations=4",
    "peft.search_batch=16",
]


def speed(repeats: int) -> dict[str, Any]:
    exp = build_experiment(
        load_config(
            None,
            [
                "data.max_train=400",
                "model.max_length=48",
                "federation.num_clients=2",
                "partition.method=iid",
            ],
        )
    )
    service = ModelService(exp.backbone, "bf16")
    data = exp.clients[0].train.subset(np.arange(32))
    width = int(data.lengths.max())
    ids = data.input_ids[:, :width]
    mask = (np.arange(width)[None] < data.lengths[:, None]).astype(np.int64)
    rng = np.random.default_rng(0)
    prompts = (
        rng.standard_normal((20, 50, service.hidden_size)) * service.embedding_std
    ).astype(np.float32)
    seconds: dict[str, list[float]] = {
        "population in one call": [],
        "one call per candidate": [],
    }
    for rep in range(repeats + 1):  # the first repeat warms up
        started = time.perf_counter()
        together = service.features(0, prompts, ids, mask)
        t_together = time.perf_counter() - started
        started = time.perf_counter()
        alone = np.stack(
            [service.features(0, prompts[p : p + 1], ids, mask)[0] for p in range(20)]
        )
        t_alone = time.perf_counter() - started
        if rep:
            seconds["population in one call"].append(t_together)
            seconds["one call per candidate"].append(t_alone)
        print(
            f"  repeat {rep}: together {t_together:.2f} s, one by one {t_alone:.2f} s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "candidates": 20,
        "examples": 32,
        "median_seconds": med,
        "candidates_per_second": {k: 20 / v for k, v in med.items()},
        "speedup": med["one call per candidate"] / med["population in one call"],
        "max_abs_difference": float(np.abs(together - alone).max()),
        "all_seconds": seconds,
    }


def federated_run() -> dict[str, Any]:
    run = FederatedRun(build_experiment(load_config(None, RUN)))
    started = time.perf_counter()
    result = run.run()
    rows = [
        {
            k: r.get(k)
            for k in (
                "round",
                "test_accuracy",
                "search_sigma",
                "train_seconds",
                "bytes_up_per_client",
                "bytes_down_per_client",
            )
        }
        for r in result.history
    ]
    for row in rows:
        print(" ", row, flush=True)
    bills = [run.service.usage(k) for k in range(4)]
    return {
        "settings": RUN,
        "rounds": rows,
        "queries_per_client": [b.queries for b in bills],
        "tokens_per_client": [b.tokens for b in bills],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.speed:
        stored["speed"] = speed(args.repeats)
        s = stored["speed"]
        print(
            f"population batching: {s['speedup']:.2f}x ({s['candidates_per_second']})"
        )
    if args.run:
        stored["run"] = federated_run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2))


if __name__ == "__main__":
    main()
