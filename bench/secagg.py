"""Secure-aggregation overhead as ratios to plain aggregation.

Plain aggregation: each client serializes its fp32 update (safetensors, the
engine's wire format) and the server decodes and sums the blobs. SecAgg: the
whole protocol in process (``fedpeft.secagg.secure_sum``, secure mode: OS
entropy), with real serialized messages. Payload: the default adapter, 8,450
float32 values (a 20×384 prompt, a 2×384 head and 2 biases).

Client compute is the mean over the clients that finished the round (they all
do the same work; the spread is timer noise). Round time treats clients as
parallel: round = client compute + server compute (network transfer and latency
are not modelled; SecAgg needs 4 server round trips against 1). Timings are
medians over ``--repeats`` after one warm-up round. "with local training" adds
``--local-seconds`` of local training to both rounds (default 1.3 s: about 100
examples at the 76 examples/s measured for the default model in DESIGN §5).

    python bench/secagg.py [--clients 10 100 1000] [--dropout 0 0.1]
        [--repeats 3] [--local-seconds 1.3] [--out bench/results/secagg.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpeft.secagg import SecAggConfig, SecAggStats, secure_sum
from fedpeft.secagg.graph import threshold_for
from fedpeft.types import Params
from fedpeft.wire import deserialize, serialize

LAYOUT = {"prompt": (20, 384), "head.weight": (2, 384), "head.bias": (2,)}


@dataclass(frozen=True)
class Row:
    n: int
    dropout: float
    graph: str
    t: int
    value_bits: int
    plain_client_s: float
    plain_server_s: float
    plain_bytes: int
    client_s: float
    server_s: float
    up_bytes: float
    key_up_bytes: float
    down_extra_bytes: float


def make_updates(n: int, rng: np.random.Generator) -> list[Params]:
    return [
        {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in LAYOUT.items()}
        for _ in range(n)
    ]


def plain_round(updates: Sequence[Params]) -> tuple[float, float, int]:
    """(mean client serialize seconds, server seconds, bytes per client)."""
    client_s, blobs = [], []
    for u in updates:
        start = time.perf_counter()
        blobs.append(serialize(u))
        client_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    total = {k: np.zeros(s, np.float64) for k, s in LAYOUT.items()}
    for blob in blobs:
        for k, v in deserialize(blob).items():
            total[k] += v
    server_s = time.perf_counter() - start
    return statistics.mean(client_s), server_s, len(blobs[0])


def secagg_round(
    updates: Sequence[Params], config: SecAggConfig, dropped: Sequence[int]
) -> SecAggStats:
    _, stats = secure_sum(updates, config, dropped_after_share=dropped)
    return stats


def measure(n: int, dropout: float, repeats: int, rng: np.random.Generator) -> Row:
    updates = make_updates(n, rng)
    config = SecAggConfig(neighbours="complete" if n <= 10 else "log2")
    dropped = sorted(rng.choice(n, size=int(dropout * n), replace=False).tolist())
    survivors = [u for u in range(n) if u not in set(dropped)]
    plains = [plain_round([updates[u] for u in survivors]) for _ in range(repeats)]
    runs = [secagg_round(updates, config, dropped) for _ in range(repeats)]
    stats = runs[0]
    up = np.array(stats.sent_total(), dtype=float)[survivors]
    mask_up = np.array(stats.sent["mask"], dtype=float)[survivors]
    down = np.array(stats.received_total(), dtype=float)[survivors]
    degree = stats.mean_degree
    return Row(
        n=n,
        dropout=dropout,
        graph="complete" if n <= 10 else f"log2 (k={degree:.0f})",
        t=threshold_for(round(degree), config.threshold),
        value_bits=stats.value_bits,
        plain_client_s=statistics.median(p[0] for p in plains),
        plain_server_s=statistics.median(p[1] for p in plains),
        plain_bytes=plains[0][2],
        client_s=statistics.median(
            statistics.mean(r.client_seconds[u] for u in survivors) for r in runs
        ),
        server_s=statistics.median(r.server_seconds for r in runs),
        up_bytes=float(up.mean()),
        key_up_bytes=float((up - mask_up).mean()),
        down_extra_bytes=float(down.mean()),
    )


def table(rows: Sequence[Row], local_s: float) -> str:
    head = (
        "| N | dropout | graph | t | q | client ms (plain → SecAgg, ×) "
        "| server ms (plain → SecAgg, ×) | up bytes/client (fp32 → SecAgg) "
        "| up ÷ fp32 | up ÷ (fp32 + keys) | down extra bytes | round × "
        f"| round × with {local_s:g} s local training |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        plain_round_s = r.plain_client_s + r.plain_server_s
        round_s = r.client_s + r.server_s
        lines.append(
            f"| {r.n} | {r.dropout:.0%} | {r.graph} | {r.t} | {r.value_bits} "
            f"| {1e3 * r.plain_client_s:.3f} → {1e3 * r.client_s:.2f} "
            f"({r.client_s / r.plain_client_s:.0f}×) "
            f"| {1e3 * r.plain_server_s:.2f} → {1e3 * r.server_s:.1f} "
            f"({r.server_s / r.plain_server_s:.0f}×) "
            f"| {r.plain_bytes:,} → {r.up_bytes:,.0f} "
            f"| {r.up_bytes / r.plain_bytes:.3f} "
            f"| {r.up_bytes / (r.plain_bytes + r.key_up_bytes):.3f} "
            f"| {r.down_extra_bytes:,.0f} "
            f"| {round_s / plain_round_s:.0f} "
            f"| {(round_s + local_s) / (plain_round_s + local_s):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local-seconds", type=float, default=1.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown here")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    measure(3, 0.0, 1, rng)  # warm-up: imports, OpenSSL and allocator first use
    rows = [
        measure(n, d, args.repeats, rng) for n in args.clients for d in args.dropout
    ]
    text = table(rows, args.local_seconds)
    print(text)
    if args.out:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        command = " ".join(["python", *sys.argv])
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(f"    {command}\n\n{text}\n\n(load average: {load})\n")


if __name__ == "__main__":
    main()
