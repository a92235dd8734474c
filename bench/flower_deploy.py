"""Round overhead of a real Flower deployment against the same run in process.

Workload: the main job's model and data (soft prompt L = 20, MiniLM-L6, 64
tokens, Rotten Tomatoes) cut to 600 training examples over 3 IID clients, 3
rounds, every client every round, FedAvg, the test set (600) evaluated every
round by the server, class-means warm start, no baselines, no client-side
evaluation (the server of a real federation holds no client data).

Each setting is one run of ``fedpeft deploy``'s machinery
(:class:`fedpeft.flower.deploy.LoopbackFederation`: SuperLink, 3 SuperNodes,
3 node workers, all on 127.0.0.1) or of the embedded engine, one after another
in this process, with the same config and seed:

* ``embedded``: the embedded engine, clients trained one after another;
* ``flower``: the deployment as ``fedpeft deploy`` runs it (node workers take
  their SuperNode's tasks; Flower's waits shortened, :mod:`fedpeft.flower.latency`);
* ``flower-stock``: Flower's defaults: a ``flwr-clientapp`` process per message
  relaying to the worker's socket, SuperNode sleeps and SuperExec poll as
  shipped (3 s / 0.5 s / 1 s);

each without and with secure aggregation. Per round (rounds 1-3): wall
seconds, its parts (clients' replies, aggregation, server evaluation) and the
clients' own training seconds (mean over the round's clients, as they report
them). Overhead per round = round seconds − client training − evaluation −
the embedded engine's aggregation.

    python bench/flower_deploy.py [--rounds 3] [--only flower embedded ...]
        [--secure-only] [--repeats N]

``--repeats N`` runs each setting N times (rows labelled ``-r1``..``-rN``): the
round overhead varies by ±0.3 s between runs on this shared machine, so a
change to it is judged on repeats. ``--secure-only`` skips the plain runs.
Results go to bench/results/flower_deploy.json, or with ``--out`` elsewhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedpeft.config import load_config

WORKLOAD = [
    "data.max_train=600",
    "federation.num_clients=3",
    "partition.method=iid",
    "strategy.fraction_fit=1.0",
    "federation.batch_clients=false",
    "federation.eval_clients=false",
    "baselines.run=[]",
]
SETTINGS = ("embedded", "flower", "flower-stock")
RESULTS = Path(__file__).parent / "results" / "flower_deploy.json"


def run_setting(
    name: str, secure: bool, rounds: int, root: Path, tag: str = ""
) -> dict[str, Any]:
    extra = [f"federation.rounds={rounds}", f"privacy.secagg={str(secure).lower()}"]
    label = f"{name}{'-secagg' if secure else ''}"
    cfg = load_config(
        None, [*WORKLOAD, *extra, f"output_dir={root}", f"name={label}{tag}"]
    )
    started = time.perf_counter()
    if name == "embedded":
        from fedpeft.engine.runner import run_experiment

        run_experiment(cfg)
    else:
        from fedpeft.flower.deploy import LoopbackFederation

        stock = name == "flower-stock"
        options: dict[str, Any] = (
            {"relay": True, "sleep_scale": 1.0, "poll_interval": 1.0} if stock else {}
        )
        with LoopbackFederation(cfg, **options) as fed:
            failure = fed.run(timeout=300.0)
        if failure:
            raise RuntimeError(f"{label}: {failure}")
    wall = time.perf_counter() - started
    records = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").open()]
    fed_rounds = [r for r in records if r.get("run") == "federated" and r["round"] > 0]
    keys = ("round_seconds", "train_seconds", "aggregate_seconds", "eval_seconds")
    per_round = {k: statistics.mean(r[k] for r in fed_rounds) for k in keys}
    per_round["client_train_seconds"] = statistics.mean(
        r.get("local_train_seconds_mean", 0.0) for r in fed_rounds
    )
    warm = next(r for r in records if r["round"] == 0)
    return {
        "setting": label,
        "secure": secure,
        "wall_seconds": wall,
        "warm_start_seconds": warm["round_seconds"],
        "final_accuracy": fed_rounds[-1]["test_accuracy"],
        **per_round,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(SETTINGS))
    parser.add_argument("--secure-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fp-deploy-bench-") as tmp:
        for secure in (True,) if args.secure_only else (False, True):
            for name in args.only:
                for i in range(args.repeats):
                    tag = f"-r{i + 1}" if args.repeats > 1 else ""
                    row = run_setting(name, secure, args.rounds, Path(tmp), tag)
                    row["setting"] += tag
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    embedded = {r["secure"]: r for r in rows if r["setting"].startswith("embedded")}
    for r in rows:
        ref = embedded.get(r["secure"])
        agg = ref["aggregate_seconds"] if ref else 0.0
        r["overhead_seconds"] = (
            r["round_seconds"] - r["client_train_seconds"] - r["eval_seconds"] - agg
        )
    head = ("setting", "round s", "clients", "eval", "overhead", "warm s", "acc")
    print("\n" + " ".join(f"{h:>12}" for h in head))
    for r in rows:
        cells = [r["setting"]] + [
            f"{r[k]:.2f}"
            for k in (
                "round_seconds",
                "client_train_seconds",
                "eval_seconds",
                "overhead_seconds",
                "warm_start_seconds",
            )
        ]
        print(" ".join(f"{c:>12}" for c in cells) + f" {r['final_accuracy']:12.4f}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"workload": WORKLOAD, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
