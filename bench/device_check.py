"""Does a run on a GPU give the CPU's results? The check to run where one is lent.

For each PEFT method, two federated rounds of the same small workload run on
the CPU and on ``--device`` (fp32, clients batched and one after another), and
the script prints, against the CPU's sequential run, the largest difference of
any coordinate of the global state and the test accuracies. Then the bf16
runs on the device, and its round time against fp32's. The numbers land in
bench/results/device_check.json. On a CPU-only machine it compares the CPU
with itself (zero differences), which checks that the script runs.

    python bench/device_check.py --device cuda [--methods prompt lora ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.models.device import describe_device, resolve_device

WORKLOAD = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=800",
    "data.max_test=200",
    "model.max_length=64",
    "federation.num_clients=10",
    "federation.rounds=2",
    "strategy.fraction_fit=0.5",
    "partition.method=iid",
    "baselines.run=[]",
]
METHOD_OPTIONS = {"prompt": ["peft.prompt_length=8"]}  # each method's own keys
RESULTS = Path("bench/results/device_check.json")


def run(method: str, device: str, batched: bool, precision: str) -> dict[str, Any]:
    cfg = load_config(
        None,
        [
            *WORKLOAD,
            f"peft.method={method}",
            *METHOD_OPTIONS.get(method, []),
            f"model.device={device}",
            f"federation.batch_clients={str(batched).lower()}",
            f"model.precision={precision}",
        ],
    )
    started = time.perf_counter()
    result = FederatedRun(build_experiment(cfg)).run()
    last = result.history[-1]
    return {
        "params": result.params,
        "accuracy": float(last["test_accuracy"]),
        "train_seconds": float(
            sum(r.get("train_seconds", 0.0) for r in result.history)
        ),
        "seconds": time.perf_counter() - started,
    }


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--methods", nargs="*", default=["prompt", "prefix", "lora", "ia3", "bitfit"]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: dict[str, Any] = {}
    for method in args.methods:
        reference = run(method, "cpu", False, "fp32")
        row: dict[str, Any] = {"cpu sequential fp32 accuracy": reference["accuracy"]}
        for batched in (False, True):
            name = "batched" if batched else "sequential"
            out = run(method, args.device, batched, "fp32")
            row[f"{name} fp32 max |Δ| vs cpu"] = max_diff(
                out["params"], reference["params"]
            )
            row[f"{name} fp32 accuracy"] = out["accuracy"]
            row[f"{name} fp32 train seconds"] = out["train_seconds"]
        bf16 = run(method, args.device, True, "bf16")
        row["batched bf16 accuracy"] = bf16["accuracy"]
        row["batched bf16 train seconds"] = bf16["train_seconds"]
        rows[method] = row
        print(method, json.dumps(row, indent=1, ensure_ascii=False), flush=True)
    stored = {"device": describe_device(resolve_device(args.device)), "methods": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2))


if __name__ == "__main__":
    main()
