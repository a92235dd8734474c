"""Image clients batched and under record-level DP (docs/benchmarks.md,
"Images: batched clients and record-level DP").

The image adapters' per-example forward lets the image clients train the way
text clients do. Two measurements, on the setting of ``bench/images.py``
(Fashion-MNIST at ``--size`` pixels on EfficientNet-Lite0, 20 clients of
``dirichlet-balanced`` Dir(0.5), half of them a round, bf16):

1. **Speed**: one round's local training of ``--clients`` clients, one after
   another vs batched (one forward/backward over the shared network per
   step), each method with and without DP-SGD; the two alternate
   ``--repeats`` times in one process and the ratio of medians is reported.
   The trained states are checked to agree.
2. **Utility under record-level DP**: federated accuracy with DP-SGD in every
   client at ``--epsilon`` (δ = 1e-5 per client, the accountant's ε after the
   last round), against the same runs without DP, both with plain
   cross-entropy (DP-SGD needs it), over ``--seeds``.

    python bench/images_private.py [--methods head visual-prompt bitfit lora]
        [--seeds 0 1 2] [--epsilon 8] [--skip-speed] [--skip-utility]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from images import base as images_setting
from results_io import cached_run, merge_results

from fedpeft.client.batched import ClientJob, train_clients_batched
from fedpeft.client.dp_local import RecordDP, dp_train_adapter, dp_train_clients_batched
from fedpeft.client.local import train_adapter
from fedpeft.config import load_config
from fedpeft.experiment import Experiment, build_experiment
from fedpeft.seeding import stream

METHODS = ("head", "visual-prompt", "bitfit", "lora")


def base(args: argparse.Namespace) -> list[str]:
    """``bench/images.py``'s setting at Dir(0.5), plain cross-entropy."""
    return [
        *images_setting(args),
        "partition.alpha=0.5",
        "client.loss=cross-entropy",
        "baselines.run=[]",
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def relative_gap(
    alone: dict[str, np.ndarray],
    batched: dict[str, np.ndarray],
    start: dict[str, np.ndarray],
) -> float:
    """‖Δ_batched − Δ_alone‖₂ / ‖Δ_alone‖₂ over all of a client's tensors."""
    diff = sum(float(np.sum((batched[n] - alone[n]) ** 2)) for n in alone)
    moved = sum(float(np.sum((alone[n] - start[n]) ** 2)) for n in alone)
    return float(np.sqrt(diff / moved))


def speed(exp: Experiment, method: str, clients: int, repeats: int) -> dict[str, Any]:
    """Seconds of one round's local training, sequential vs batched."""
    cfg = exp.config.client
    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5)
    model = exp.new_adapter(method)
    start = model.trainable_state()

    def jobs() -> list[ClientJob]:
        return [
            ClientJob(k, start, exp.clients[k].train, stream(0, "client", 1, k))
            for k in range(clients)
        ]

    def noise() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(k) for k in range(clients)]

    def alone(dp_sgd: bool, precision: str = "bf16") -> list[dict[str, np.ndarray]]:
        states = []
        for job, gen in zip(jobs(), noise(), strict=True):
            model.load_trainable_state(job.start)
            if dp_sgd:
                dp_train_adapter(model, job.data, cfg, dp, job.rng, gen, precision)
            else:
                train_adapter(model, job.data, cfg, job.rng, precision=precision)
            states.append(model.trainable_state())
        return states

    def together(dp_sgd: bool) -> list[dict[str, np.ndarray]]:
        model.load_trainable_state(start)
        if dp_sgd:
            out = dp_train_clients_batched(model, jobs(), noise(), cfg, dp, "bf16")
        else:
            out = train_clients_batched(model, jobs(), cfg, precision="bf16")
        return [state for state, _ in out]

    result: dict[str, Any] = {}
    for dp_sgd in (False, True):
        seq_s, bat_s = [], []
        for _ in range(repeats):  # alternate, so drift hits both alike
            s, seq_states = timed(lambda dp_sgd=dp_sgd: alone(dp_sgd))
            b, bat_states = timed(lambda dp_sgd=dp_sgd: together(dp_sgd))
            seq_s.append(s)
            bat_s.append(b)
        # How far apart the two engines' updates end: ‖Δ_batched − Δ_alone‖ /
        # ‖Δ_alone‖ per client (bf16 rounds a different batch differently,
        # and Adam turns a near-zero gradient's sign into a whole step).
        gap = max(
            relative_gap(a, b, start)
            for a, b in zip(seq_states, bat_states, strict=True)
        )
        # The scale of that noise: the same clients alone in fp32 vs bf16.
        fp32 = alone(dp_sgd, "fp32")
        precision_gap = max(
            relative_gap(a, b, start) for a, b in zip(fp32, seq_states, strict=True)
        )
        key = "dp" if dp_sgd else "plain"
        result[key] = {
            "sequential_s": seq_s,
            "batched_s": bat_s,
            "speedup": statistics.median(seq_s) / statistics.median(bat_s),
            "max_relative_update_gap": gap,
            "max_relative_update_gap_fp32_vs_bf16": precision_gap,
        }
        print(
            f"  {method:14s} {key:5s}: one after another "
            f"{statistics.median(seq_s):6.2f} s, batched "
            f"{statistics.median(bat_s):6.2f} s, "
            f"×{result[key]['speedup']:.2f}, updates differ by ≤ {gap:.1%} "
            f"(alone, fp32 vs bf16: ≤ {precision_gap:.1%})",
            flush=True,
        )
    return result


def utility(args: argparse.Namespace, method: str, seed: int, dp: bool) -> Any:
    private = (
        [
            f"privacy.record_dp.target_epsilon={args.epsilon}",
            "privacy.record_dp.delta=1e-5",
        ]
        if dp
        else []
    )
    arm = f"dp{args.epsilon:g}" if dp else "ce"
    return cached_run(
        [
            *base(args),
            *private,
            f"peft.method={method}",
            f"seed={seed}",
            f"name={method}-{arm}-s{seed}",
            f"output_dir={args.out}",
        ]
    )


def report(rows: Sequence[dict[str, Any]], epsilon: float) -> str:
    def cell(v: Sequence[float]) -> str:
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else "—"

    lines = [
        f"| method | no DP (cross-entropy) | record DP, ε = {epsilon:g} | "
        "paired difference | macro-F1 no DP / DP | ε spent |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        plain, private = row["plain"], row["dp"]
        acc = [r["federated"]["final_accuracy"] for r in plain]
        acc_dp = [r["federated"]["final_accuracy"] for r in private]
        f1 = [r["federated"]["final_macro_f1"] for r in plain]
        f1_dp = [r["federated"]["final_macro_f1"] for r in private]
        spent = [r["privacy"]["record_epsilon_max"] for r in private]
        diff = [b - a for a, b in zip(acc, acc_dp, strict=True)]
        lines.append(
            f"| {row['method']} | {cell(acc)} | {cell(acc_dp)} | {cell(diff)} | "
            f"{np.mean(f1):.3f} / {np.mean(f1_dp):.3f} | {max(spent):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--max-train", type=int, default=4000)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-utility", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/images_private"))
    p.add_argument(
        "--results", type=Path, default=Path("bench/results/images_private.json")
    )
    p.set_defaults(fraction=0.5)  # of the 20 clients a round, as bench/images.py
    args = p.parse_args()
    stored: dict[str, Any] = {}
    if not args.skip_speed:
        torch.manual_seed(0)
        print(f"speed: {args.clients} clients' local round, median of {args.repeats}")
        exp = build_experiment(
            load_config(
                None,
                [
                    *base(args),
                    "peft.method=head",
                    f"output_dir={args.out}",
                    "name=speed",
                ],
            )
        )
        stored["speed"] = {
            m: speed(exp, m, args.clients, args.repeats) for m in args.methods
        }
    if not args.skip_utility:
        rows = []
        for method in args.methods:
            rows.append(
                {
                    "method": method,
                    "plain": [utility(args, method, s, False) for s in args.seeds],
                    "dp": [utility(args, method, s, True) for s in args.seeds],
                }
            )
        print(report(rows, args.epsilon))

        def kept(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                {"seed": seed, "federated": r["federated"], "privacy": r["privacy"]}
                for seed, r in zip(args.seeds, runs, strict=True)
            ]

        stored["utility"] = {
            "epsilon": args.epsilon,
            "rows": [
                {"method": r["method"], "plain": kept(r["plain"]), "dp": kept(r["dp"])}
                for r in rows
            ],
        }
    merge_results(args.results, stored)


if __name__ == "__main__":
    main()
