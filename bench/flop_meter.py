"""What measuring FLOPs costs: the FLOP meter counting every padded length
under ``FlopCounterMode`` vs computing a family's lengths from its checked
parabola (the default).

Runs the default main job's federated rounds (no baselines) twice per repeat,
interleaved, each run with a fresh meter, and prints the training seconds
and the client FLOPs of each (which must be equal).

    python bench/flop_meter.py [--rounds 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch

from fedpeft.client.flops import FlopMeter
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment

RESULTS = Path("bench/results/flop_meter.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    exp = build_experiment(
        load_config(None, ["baselines.run=[]", f"federation.rounds={args.rounds}"])
    )
    seconds: dict[str, list[float]] = {"every length": [], "fitted lengths": []}
    flops: dict[str, float] = {}
    for _ in range(args.repeats):
        for name in seconds:
            run = FederatedRun(exp)
            run.client.flops = FlopMeter(fit_lengths=name == "fitted lengths")
            result = run.run()
            seconds[name].append(
                sum(r.get("train_seconds", 0.0) for r in result.history)
            )
            flops[name] = result.totals["client_flops"]
            print(f"  {name}: {seconds[name][-1]:.1f} s, {flops[name]!r} FLOPs")
    median = {k: statistics.median(v) for k, v in seconds.items()}
    stored = {"median_train_seconds": median, "all": seconds, "client_flops": flops}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2))
    ratio = median["every length"] / median["fitted lengths"]
    same = flops["every length"] == flops["fitted lengths"]
    print(
        f"training seconds over {args.rounds} rounds: every length "
        f"{median['every length']:.1f}, fitted {median['fitted lengths']:.1f} "
        f"({ratio:.2f}×); client FLOPs equal: {same}"
    )


if __name__ == "__main__":
    main()
