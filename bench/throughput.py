"""Local-update training throughput (examples/s), fp32 vs bf16 backbone compute.

Runs the real local update (fedpeft.client.train_adapter) of the default
experiment's clients, alternating fp32 and bf16 trials so that both see the same
machine load, and reports the median of each and their ratio.

    python bench/throughput.py [--trials 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

from fedpeft.client import evaluate, train_adapter
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment
from fedpeft.seeding import stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    cfg = load_config(None, ["baselines.run=[]", *args.overrides])
    exp = build_experiment(cfg)
    model = exp.new_adapter()
    start = model.trainable_state()
    data = exp.train.subset(range(0, min(len(exp.train), 480)))  # type: ignore[arg-type]
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    accs: dict[str, float] = {}
    for trial in range(args.trials):
        for precision in ("fp32", "bf16"):
            model.load_trainable_state(start)
            t0 = time.perf_counter()
            stats = train_adapter(
                model,
                data,
                cfg.client,
                stream(0, "client", trial, 0),
                precision=precision,
            )
            rates[precision].append(stats.examples / (time.perf_counter() - t0))
            if trial == 0:
                accs[precision] = evaluate(model, exp.test, precision="fp32").accuracy
    print(
        f"examples: {len(data)} per trial, batch {cfg.client.batch_size}, "
        f"prompt {cfg.peft.prompt_length}, max_length {cfg.model.max_length}"
    )
    for precision, values in rates.items():
        print(
            f"{precision}: median {statistics.median(values):.1f} ex/s "
            f"(trials {', '.join(f'{v:.1f}' for v in values)}), "
            f"test accuracy after one pass {accs[precision]:.4f}"
        )
    ratio = statistics.median(rates["bf16"]) / statistics.median(rates["fp32"])
    print(f"bf16 / fp32 throughput ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
