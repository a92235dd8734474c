"""fedpeft's round loop on Flower's simulation engine (Ray) at 1,000 clients.

Workload: the tweets corpus (30,000 training tweets, 3 classes), IID over N
clients (30 examples each at N = 1,000, 10% of them held for validation),
soft prompt L = 20 on MiniLM-L6 (64 tokens), 10% of the clients per round,
2 rounds, FedAvg, class-means warm start over every client, the server
evaluating 600 test tweets each round; no baselines, no client evaluation.

Each N runs in a fresh process (``run_simulation`` starts Ray itself), with
2 Ray actors of 1 CPU. Memory: the peak of the summed proportional set size
(PSS) of the process and all its descendants (Ray's workers, raylet, GCS),
sampled every second, so shared pages count once. Per worker: the largest
actor's PSS after the run; per simulated client: the slope between N = 100
and N = 1,000 of the summed actor PSS (each actor keeps one node object per
client it served).

    python bench/flower_simulation.py [--clients 100 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "flower_simulation.json"


def workload(clients: int, rounds: int, out: str) -> list[str]:
    return [
        "data.corpus=tweets-sentiment",
        "data.max_train=30000",
        "partition.method=iid",
        f"federation.num_clients={clients}",
        f"federation.rounds={rounds}",
        "strategy.fraction_fit=0.1",
        "strategy.min_fit_clients=2",
        "federation.eval_clients=false",
        "baselines.run=[]",
        f"output_dir={out}",
        f"name=sim{clients}",
    ]


class TreeMemory:
    """Peak summed PSS (MiB) of this process and its descendants, and the
    PSS of each descendant at its own peak."""

    def __init__(self) -> None:
        import psutil

        self.root = psutil.Process()
        self.peak = 0.0
        self.per_process: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.is_set():
            total = 0.0
            for p in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    pss = p.memory_full_info().pss / 2**20
                    total += pss
                    if "ClientAppActor" in " ".join(p.cmdline()):
                        self.per_process[p.pid] = max(
                            self.per_process.get(p.pid, 0.0), pss
                        )
            self.peak = max(self.peak, total)
            time.sleep(1.0)

    def stop(self) -> tuple[float, dict[int, float]]:
        self._done.set()
        self._thread.join()
        return self.peak, self.per_process


def one(clients: int, rounds: int) -> dict[str, Any]:
    """Run one simulation here (called in a fresh process)."""
    from fedpeft.config import load_config
    from fedpeft.flower.simulation import simulate

    with tempfile.TemporaryDirectory(prefix="fp-sim-") as tmp:
        cfg = load_config(None, workload(clients, rounds, tmp))
        memory = TreeMemory()
        started = time.perf_counter()
        summary = simulate(cfg, cpus_per_client=1.0)
        wall = time.perf_counter() - started
        peak, actors = memory.stop()
        records = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").open()]
    rounds_s = [r["round_seconds"] for r in records if r["round"] > 0]
    return {
        "clients": clients,
        "wall_seconds": wall,
        "warm_start_seconds": records[0]["round_seconds"],
        "round_seconds": rounds_s,
        "clients_per_round": [len(r["clients"]) for r in records if r["round"] > 0],
        "failed": [r.get("failed_clients", []) for r in records],
        "final_accuracy": summary["federated"]["final_accuracy"],
        "peak_pss_mib": peak,
        "actor_peak_pss_mib": sorted(actors.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.rounds)), flush=True)
        return
    rows = []
    for n in args.clients:
        cmd = [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            raise SystemExit(
                f"N = {n} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        slope = (sum(b["actor_peak_pss_mib"]) - sum(a["actor_peak_pss_mib"])) / (
            b["clients"] - a["clients"]
        )
        print(f"actor memory per simulated client: {slope * 1024:.1f} KiB")
        rows.append({"actor_pss_kib_per_client": slope * 1024})
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
