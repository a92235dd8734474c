"""Black-box prompt tuning: population batching and one small federated run.

``--speed``: candidates scored per second by the model service, a whole
CMA-ES population (P = 20 prompts of L = 50 tokens) on one draw of 32 Rotten
Tomatoes examples in one call, against the same 20 candidates one call each
(interleaved, medians over the repeats; MiniLM-L6, bf16).

``--run``: one federated black-box run on Rotten Tomatoes (few clients, short
search; the settings are printed) with its per-round accuracy, σ, bytes and
the service's bill per client.

``--compare``: few-shot Rotten Tomatoes (64 training examples over 4 IID
clients, 300 test examples), per seed: black-box with FedBPT's rule, with the
plain mean, and gradient prompt tuning, all 4 clients every round for
``--rounds`` rounds. Round 0 of the black-box runs (the clients' probe heads
at z = 0, averaged) is the federated linear probe. Cells are cached in
runs/blackbox_compare/ (rerun with --fresh).

    python bench/blackbox.py --speed [--repeats 5] [--run]
``--grid``: full Rotten Tomatoes and 2,000 training examples of the tweets
corpus, 4 IID clients, 3 rounds, the issue's search (population 20 × 8
iterations) on 16-example draws, per seed: black-box (FedBPT rule, diagonal
covariance) and gradient prompt tuning. Round 0 of the black-box run is the
federated linear probe. Cells cached in runs/blackbox_grid/.

``--decoder``: the pure black-box mode on SmolLM2-135M (label-word logits
of the verbalizer, nothing trained but z): 2 clients, 2 rounds, short search.
Round 0 is the zero-shot verbalizer behind the zero prompt.

    python bench/blackbox.py --compare [--seeds 0 1 2] [--rounds 4]
    python bench/blackbox.py --decoder [--no-prompt]
    python bench/blackbox.py --grid [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_io import merge_results, write_json  # bench/results_io.py

from fedpeft.blackbox.client import BlackBoxClient
from fedpeft.blackbox.service import ModelService
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment

RESULTS = Path("bench/results/blackbox.json")
DECODER_RESULTS = Path("bench/results/blackbox_decoder.json")
SEARCH = ["peft.popsize=10", "peft.iterations=4", "peft.search_batch=16"]
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
    *SEARCH,
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


def federated_run(settings: list[str], clients: int) -> dict[str, Any]:
    """One seeded black-box run: per-round accuracy, σ, seconds, bytes, bill."""
    run = FederatedRun(build_experiment(load_config(None, settings)))
    started = time.perf_counter()
    result = run.run()
    keys = ("round", "test_accuracy", "search_sigma", "train_seconds")
    keys += ("bytes_up_per_client", "bytes_down_per_client")
    rows = [{k: r.get(k) for k in keys} for r in result.history]
    for row in rows:
        print(" ", row, flush=True)
    assert isinstance(run.algorithm, BlackBoxClient)
    bills = [run.algorithm.service.usage(k) for k in range(clients)]
    return {
        "settings": settings,
        "rounds": rows,
        "queries_per_client": [b.queries for b in bills],
        "tokens_per_client": [b.tokens for b in bills],
        "seconds": time.perf_counter() - started,
    }


FEW_SHOT = [
    "data.max_train=64",
    "data.max_test=300",
    "model.max_length=32",
    "federation.num_clients=4",
    "strategy.fraction_fit=1.0",
    "partition.method=iid",
    "baselines.run=[]",
]
ARMS = {
    "black-box, FedBPT rule, diagonal": [
        "peft.method=blackbox",
        *SEARCH,
        "peft.server_rule=fedbpt",
        "peft.covariance=diagonal",
    ],
    "black-box, FedBPT rule, isotropic": [
        "peft.method=blackbox",
        *SEARCH,
        "peft.server_rule=fedbpt",
        "peft.covariance=isotropic",
    ],
    "black-box, mean": [
        "peft.method=blackbox",
        *SEARCH,
        "peft.server_rule=mean",
    ],
    "black-box, FedBPT rule, fixed head": [
        "peft.method=blackbox",
        *SEARCH,
        "peft.server_rule=fedbpt",
        "peft.head=fixed",
    ],
    "gradient prompt tuning": ["peft.method=prompt", "peft.head_init=probe"],
}
CACHE = Path("runs/blackbox_compare")


def cell(
    cache: Path, arm: str, settings: list[str], seed: int, rounds: int, fresh: bool
) -> dict[str, Any]:
    """One seeded run of ``settings`` (4 clients), cached under ``cache``."""
    key = f"{arm.replace(' ', '_').replace(',', '')}-seed{seed}-r{rounds}"
    path = cache / f"{key}.json"
    if path.exists() and not fresh:
        return dict(json.loads(path.read_text()))
    cfg = load_config(None, [*settings, f"seed={seed}", f"federation.rounds={rounds}"])
    run = FederatedRun(build_experiment(cfg))
    started = time.perf_counter()
    result = run.run()
    out = {
        "arm": arm,
        "seed": seed,
        "accuracy": [r["test_accuracy"] for r in result.history],
        "macro_f1": [r.get("test_macro_f1") for r in result.history],
        "bytes_up_per_client": result.history[-1].get("bytes_up_per_client"),
        "bytes_down_per_client": result.history[-1].get("bytes_down_per_client"),
        "client_seconds_per_round": statistics.mean(
            r.get("train_seconds", 0.0) / 4 for r in result.history[1:]
        ),
        "seconds": time.perf_counter() - started,
    }
    if isinstance(run.algorithm, BlackBoxClient):
        service = run.algorithm.service
        out["queries_per_client_round"] = service.usage(0).queries / (rounds + 1)
        out["tokens_per_client_round"] = service.usage(0).tokens / (rounds + 1)
    write_json(path, out)
    print(f"  {key}: {out['accuracy']} ({out['seconds']:.0f} s)", flush=True)
    return out


def summarize(cells: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per arm: final accuracy mean ± sd over seeds, round 0, cost."""
    table: dict[str, Any] = {}
    for arm in arms:
        rows = [c for c in cells if c["arm"] == arm]
        final = [c["accuracy"][-1] for c in rows]
        start = [c["accuracy"][0] for c in rows]
        table[arm] = {
            "final_mean": statistics.mean(final),
            "final_sd": statistics.stdev(final) if len(final) > 1 else 0.0,
            "round0_mean": statistics.mean(start),
            "finals": final,
            "rounds0": start,
            "client_seconds_per_round": statistics.mean(
                c["client_seconds_per_round"] for c in rows
            ),
            "bytes_up_per_client": rows[0]["bytes_up_per_client"],
            "bytes_down_per_client": rows[0]["bytes_down_per_client"],
            "queries_per_client_round": rows[0].get("queries_per_client_round"),
        }
        print(arm, json.dumps(table[arm]), flush=True)
    return table


def compare(seeds: list[int], rounds: int, fresh: bool) -> dict[str, Any]:
    cells = [
        cell(CACHE, arm, [*FEW_SHOT, *options], seed, rounds, fresh)
        for seed in seeds
        for arm, options in ARMS.items()
    ]
    table = summarize(cells, list(ARMS))
    return {"settings": FEW_SHOT, "arms": ARMS, "seeds": seeds, "table": table}


GRID_SEARCH = ["peft.popsize=20", "peft.iterations=8", "peft.search_batch=16"]
GRID_DATA = {
    "rotten-tomatoes (full)": ["data.corpus=rotten-tomatoes", "data.max_train=100000"],
    "tweets-sentiment (2,000)": ["data.corpus=tweets-sentiment", "data.max_train=2000"],
}
GRID_COMMON = [
    "data.max_test=1000",
    "model.max_length=32",
    "federation.num_clients=4",
    "strategy.fraction_fit=1.0",
    "partition.method=iid",
    "baselines.run=[]",
]
GRID_ARMS = {
    "black-box FedBPT": ["peft.method=blackbox", *GRID_SEARCH],
    "black-box FedBPT, fixed head": [
        "peft.method=blackbox",
        *GRID_SEARCH,
        "peft.head=fixed",
    ],
    "gradient prompt tuning": ["peft.method=prompt", "peft.head_init=probe"],
}
GRID_CACHE = Path("runs/blackbox_grid")
ZERO_SHOT = [  # the service's verbalizer on SmolLM2 (nothing is trained)
    "peft.method=blackbox",
    "model.backbone=smollm2-135m",
    "peft.head=verbalizer",
    "data.max_train=200",
]


def grid(
    seeds: list[int], rounds: int, fresh: bool, arms: list[str] | None = None
) -> dict[str, Any]:
    chosen = {a: o for a, o in GRID_ARMS.items() if arms is None or a in arms}
    out: dict[str, Any] = {"common": GRID_COMMON, "arms": chosen, "seeds": seeds}
    for corpus, data in GRID_DATA.items():
        cache = GRID_CACHE / corpus.split(" ")[0]
        cells = [
            cell(cache, arm, [*GRID_COMMON, *data, *opts], seed, rounds, fresh)
            for seed in seeds
            for arm, opts in chosen.items()
        ]
        out[corpus] = summarize(cells, list(chosen))
    return out


DECODER = [  # RUN's settings, then the decoder's (later overrides win)
    *RUN,
    "model.backbone=smollm2-135m",
    "peft.head=verbalizer",
    "data.max_train=200",
    "federation.num_clients=2",
    "federation.rounds=2",
]


def no_prompt(settings: list[str]) -> dict[str, Any]:
    """Zero-shot without any prompt: the verbalizer's label-word logits of the
    bare test texts, through the same service (``--decoder``'s round 0 has
    the zero prompt A·0, 50 zero vectors, in front)."""
    exp = build_experiment(load_config(None, settings))
    service = ModelService(exp.backbone, exp.config.model.precision)
    test = exp.test
    width = int(test.lengths.max())
    ids = test.input_ids[:, :width]
    mask = (np.arange(width)[None] < test.lengths[:, None]).astype(np.int64)
    empty = np.zeros((1, 0, service.hidden_size), np.float32)
    logits = service.label_logits(0, empty, ids, mask, tuple(exp.corpus.label_names))
    accuracy = float((logits[0].argmax(-1) == test.labels).mean())
    print(f"  no prompt: test accuracy {accuracy:.3f} ({len(test)} examples)")
    return {"test_accuracy": accuracy, "examples": len(test)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--decoder", action="store_true")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument(
        "--arms", nargs="+", default=None, help="--grid: only these arms (names)"
    )
    parser.add_argument(
        "--no-prompt", action="store_true", help="--decoder's zero-shot, no prompt"
    )
    parser.add_argument(
        "--grid-baselines",
        action="store_true",
        help="MiniLM's centralized linear probe and zero-shot on the grid's data",
    )
    parser.add_argument(
        "--grid-zero-shot",
        action="store_true",
        help="SmolLM2's zero-shot verbalizer (no prompt) on the grid's test sets",
    )
    args = parser.parse_args()
    stored: dict[str, Any] = {}  # this run's entries; the file keeps the rest
    if args.speed:
        stored["speed"] = speed(args.repeats)
        s = stored["speed"]
        print(
            f"population batching: {s['speedup']:.2f}x ({s['candidates_per_second']})"
        )
    if args.run:
        stored["run"] = federated_run(RUN, 4)
    if args.decoder:  # a file of its own: it runs beside the others
        DECODER_RESULTS.write_text(json.dumps(federated_run(DECODER, 2), indent=2))
    if args.no_prompt:
        decoder = json.loads(DECODER_RESULTS.read_text())
        decoder["no_prompt"] = no_prompt(DECODER)
        DECODER_RESULTS.write_text(json.dumps(decoder, indent=2))
    if args.compare:
        stored["compare"] = compare(args.seeds, args.rounds, args.fresh)
    if args.grid:
        stored["grid"] = grid(args.seeds, 3, args.fresh, args.arms)
    if args.grid_baselines:  # MiniLM's centralized probe and zero-shot
        from fedpeft.baselines.probe import run_linear_probe, run_zero_shot

        stored["grid_baselines"] = {}
        for corpus, data in GRID_DATA.items():
            exp = build_experiment(load_config(None, [*GRID_COMMON, *data]))
            probe, zero = run_linear_probe(exp), run_zero_shot(exp)
            stored["grid_baselines"][corpus] = {"probe": probe, "zero_shot": zero}
            print(corpus, probe["test_accuracy"], zero["test_accuracy"], flush=True)
    if args.grid_zero_shot:  # SmolLM2's verbalizer on the grid's test sets
        stored["grid_zero_shot"] = {
            corpus: no_prompt([*GRID_COMMON, *data, *ZERO_SHOT])
            for corpus, data in GRID_DATA.items()
        }
    merge_results(RESULTS, stored)


if __name__ == "__main__":
    main()
