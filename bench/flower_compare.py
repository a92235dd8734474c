"""The embedded engine vs Flower's simulation engine on the same workload.

Workload: soft prompt tuning (L = 20, MiniLM-L6, 64 tokens) on Rotten Tomatoes,
N = 100 IID clients of 80 examples (no validation split), 10 clients a round,
1 local epoch of batch 16, FedAvg, no evaluation during the rounds. Every
client trains with fedpeft's own ``train_adapter`` on the same shard and the
same shuffling stream in both engines, so the work per round is identical.

* Flower 1.42 ``run_simulation`` (Ray backend): a ``NumPyClient`` whose
  ``fit`` loads the prompt and head, trains and returns them; each Ray actor
  builds the experiment (backbone + data) once, the usual Flower pattern.
  Actors get 1 CPU (two actors) or 2 CPUs (one actor); the clients compute in
  fp32 (Flower's usual setting) or, as a control for the engine's bf16 row,
  under bf16 autocast with the same attention as fedpeft's.
* fedpeft's embedded engine: sequential fp32, client-batched fp32 and bf16.

Per round, the client phase: from the strategy's ``configure_fit`` to its
``aggregate_fit`` (Flower) or the engine's ``train_seconds``. Start-up: from
launch to the first round's start. Memory: the peak of the summed memory
of the process and all its descendants (Ray's workers, raylet, GCS) as
proportional set size (shared pages split between their users), sampled
every second (reading every process's smaps costs CPU; sparser sampling
keeps it out of the round times). Each measurement runs in a fresh process.

    python bench/flower_compare.py [--rounds 4] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WORKLOAD = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=8000",
    "data.max_test=100",
    "model.max_length=64",
    "federation.num_clients=100",
    "federation.eval_every=1000",
    "strategy.fraction_fit=0.1",
    "partition.method=iid",
    "partition.val_fraction=0",
    "peft.method=prompt",
    "peft.head_init=zeros",
    "baselines.run=[]",
]
RESULTS = Path("bench/results/flower_compare.json")
RUNS = {
    "flower, 1-CPU actors": ["--engine", "flower", "--cpus", "1"],
    "flower, 2-CPU actor": ["--engine", "flower", "--cpus", "2"],
    "flower, 1-CPU actors, bf16": [
        "--engine",
        "flower",
        "--cpus",
        "1",
        "--precision",
        "bf16",
    ],
    "fedpeft sequential fp32": ["--engine", "fedpeft", "--precision", "fp32"],
    "fedpeft batched fp32": ["--engine", "fedpeft", "--precision", "fp32", "--batched"],
    "fedpeft batched bf16": ["--engine", "fedpeft", "--precision", "bf16", "--batched"],
}


class TreeMemory:
    """Peak summed PSS (MiB) of this process and its descendants.

    PSS (proportional set size) splits shared pages between the processes that
    map them, so the sum over Ray's processes, which share libraries and the
    object store, counts each page once; summed RSS would count them repeatedly.
    """

    def __init__(self) -> None:
        import psutil

        self.root = psutil.Process()
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.is_set():
            total = 0
            for p in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_full_info().pss
            self.peak = max(self.peak, total / 2**20)
            time.sleep(1.0)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def _config(rounds: int, extra: list[str]) -> Any:
    from fedpeft.config import load_config

    return load_config(None, [*WORKLOAD, f"federation.rounds={rounds}", *extra])


# ------------------------------------------------------------------ Flower
_EXPERIMENT: Any = None
_METER: Any = None  # one FLOP meter per actor, as the embedded engine keeps one


def _experiment(rounds: int) -> Any:
    """One experiment per Ray actor process (backbone + data loaded once)."""
    global _EXPERIMENT
    if _EXPERIMENT is None:
        from fedpeft.experiment import build_experiment

        _EXPERIMENT = build_experiment(_config(rounds, []))
    return _EXPERIMENT


def run_flower(rounds: int, cpus: int, precision: str) -> dict[str, Any]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedpeft.client.local import train_adapter
    from fedpeft.seeding import stream

    memory = TreeMemory()
    launched = time.perf_counter()
    cfg = _config(rounds, [])
    exp = _experiment(rounds)
    names = list(exp.new_adapter().trainable_state())
    initial = exp.new_adapter().trainable_state()

    class PromptClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, k: int) -> None:
            self.k = k

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> Any:
            e = _experiment(rounds)
            model = e.new_adapter()
            model.load_trainable_state(dict(zip(names, parameters, strict=True)))
            data = e.clients[self.k].train
            rnd = int(config["round"])
            global _METER
            if _METER is None:
                from fedpeft.client.flops import FlopMeter

                _METER = FlopMeter()
            train_adapter(
                model,
                data,
                e.config.client,
                stream(0, "client", rnd, self.k),
                precision=str(config["precision"]),
                flops=_METER,
            )
            state = model.trainable_state()
            return [state[n] for n in names], len(data), {}

    def client_fn(context: Context) -> Any:
        return PromptClient(int(context.node_config["partition-id"])).to_client()

    marks: dict[str, list[float]] = {"start": [], "end": [], "failures": []}

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def configure_fit(self, server_round: int, *args: Any, **kw: Any) -> Any:
            marks["start"].append(time.perf_counter())
            return super().configure_fit(server_round, *args, **kw)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            marks["end"].append(time.perf_counter())
            marks["failures"].append(len(failures))
            return super().aggregate_fit(server_round, results, failures)

    per_round = round(cfg.strategy.fraction_fit * cfg.federation.num_clients)

    def server_fn(context: Context) -> Any:
        strategy = TimedFedAvg(
            fraction_fit=cfg.strategy.fraction_fit,
            fraction_evaluate=0.0,
            min_fit_clients=per_round,
            min_evaluate_clients=0,
            min_available_clients=cfg.federation.num_clients,
            initial_parameters=ndarrays_to_parameters([initial[n] for n in names]),
            on_fit_config_fn=lambda r: {"round": r, "precision": precision},
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=cfg.federation.num_clients,
        backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": 0.0}},
    )
    peak = memory.stop()
    if sum(marks["failures"]) or len(marks["end"]) != rounds:
        # A failed client makes a round short, not fast: no figures then.
        raise SystemExit(
            f"Flower rounds finished: {len(marks['end'])} of {rounds}; failed "
            f"clients per round: {marks['failures']} (see the log above)"
        )
    rounds_s = [e - s for s, e in zip(marks["start"], marks["end"], strict=True)]
    return {
        "round_seconds": rounds_s,
        "startup_seconds": marks["start"][0] - launched,
        "peak_rss_mib": peak,
    }


# ----------------------------------------------------------------- fedpeft
def run_fedpeft(rounds: int, precision: str, batched: bool) -> dict[str, Any]:
    from fedpeft.engine.simulation import FederatedRun
    from fedpeft.experiment import build_experiment

    memory = TreeMemory()
    launched = time.perf_counter()
    cfg = _config(
        rounds,
        [f"model.precision={precision}", f"federation.batch_clients={batched}"],
    )
    run = FederatedRun(build_experiment(cfg))
    params = run.model.trainable_state()
    startup = time.perf_counter() - launched
    seconds = []
    for rnd in range(1, rounds + 1):
        params, record = run.run_round(rnd, params)
        seconds.append(record["train_seconds"])
    return {
        "round_seconds": seconds,
        "startup_seconds": startup,
        "peak_rss_mib": memory.stop(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    parser.add_argument("--engine", choices=["flower", "fedpeft"])
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batched", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.engine == "flower":
        print(json.dumps(run_flower(args.rounds, args.cpus, args.precision)))
        return
    if args.engine == "fedpeft":
        print(json.dumps(run_fedpeft(args.rounds, args.precision, args.batched)))
        return
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report_only:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}
        for name in args.only:
            out = subprocess.run(
                [sys.executable, __file__, "--rounds", str(args.rounds), *RUNS[name]],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if out.returncode != 0:
                print(f"  {name} failed:\n{out.stderr[-3000:]}", flush=True)
                continue
            stored[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name}: {stored[name]}", flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(stored, indent=2))
    print(render(stored))


def render(stored: dict[str, Any]) -> str:
    lines = [
        "| engine | s / round (median of rounds 2..R) | vs Flower 1-CPU actors "
        "| start-up s | peak memory (process tree, PSS) |",
        "|---|---|---|---|---|",
    ]
    ref = stored.get("flower, 1-CPU actors")
    ref_s = statistics.median(ref["round_seconds"][1:]) if ref else None
    for name, r in stored.items():
        s = statistics.median(r["round_seconds"][1:])
        ratio = f"{ref_s / s:.2f}×" if ref_s else "—"
        lines.append(
            f"| {name} | {s:.2f} | {ratio} | {r['startup_seconds']:.1f} "
            f"| {r['peak_rss_mib']:,.0f} MiB |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
