"""Simulation speed: client-batched vs sequential engine vs a plain PyTorch loop.

Workload: soft prompt tuning (L = 20, MiniLM-L6, 64 tokens) on Rotten Tomatoes,
40 IID clients of 80 training examples (no validation split, so a round is
training only), 10 clients a round, 1 local epoch of batch 16. Every variant
runs the same rounds (same clients, same shuffles) in one process, interleaved
round by round, so machine noise hits them alike; figures are medians over the
repeats. Measured per round, the client phase (local training, payload
serialization and checks; not aggregation or evaluation):

* ``plain loop``: per client, load the prompt and head, a fresh
  ``torch.optim.AdamW`` and ``for batch: loss.backward(); opt.step()``;
  no framework at all;
* ``sequential``: the embedded engine training clients one after another;
* ``batched``: the embedded engine with ``federation.batch_clients`` (one
  forward/backward over the concatenated batches of all selected clients);
* each engine in fp32 and with bf16 backbone compute (fp32 adapter/optimizer).

Backbone share: the time of the forward+backward calls alone (timed inside a
plain loop over the same length buckets of the same concatenated batches) over
the batched engine's round time.

``--accuracy`` also runs the default main job twice, sequential fp32 vs batched
bf16, and compares final accuracy. ``--memory`` measures peak RSS of a batched
run at N = 10, 100, 1000 clients (each in a fresh process).

``--methods lora ia3 ...`` also times the four engine variants (sequential
and batched, fp32 and bf16) for other PEFT methods on the same workload.

``--record-dp`` times rounds of the same workload under record-level DP-SGD
(σ = 1, C = 1): sequential fp32 against batched fp32 and bf16.

``--local-only`` times the local-only baseline of the default main job
(every client trains alone for the run's epochs) with its clients batched
and one after another, interleaved, and compares the two results.

``--device cuda`` runs the speed comparison on a GPU (stored apart from the
CPU figures) and adds, per variant, the GPU's mean utilisation while it
trained (``nvidia-smi`` sampled every 50 ms) and the peak memory torch
allocated on the GPU.

    python bench/engine_speed.py [--repeats 3] [--accuracy] [--memory]
        [--methods METHOD ...] [--record-dp] [--local-only] [--no-speed]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.batched import concat_batches, length_buckets, sub_batch
from fedpeft.client.steps import batch_orders
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment, build_experiment
from fedpeft.models.device import describe_device
from fedpeft.models.precision import autocast
from fedpeft.seeding import stream

WORKLOAD = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=3200",
    "data.max_test=100",
    "model.max_length=64",
    "federation.num_clients=40",
    "federation.rounds=1000",
    "federation.eval_every=1000",
    "strategy.fraction_fit=0.25",
    "partition.method=iid",
    "partition.val_fraction=0",
    "peft.method=prompt",
    "peft.head_init=zeros",
    "baselines.run=[]",
]
RESULTS = Path("bench/results/engine_speed.json")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (GPU timings end here)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def gpu_utilisation(device: torch.device, into: list[float]) -> Iterator[None]:
    """Append the GPU's mean utilisation (%) over the block to ``into``
    (``nvidia-smi`` samples every 50 ms; nothing is appended on the CPU)."""
    if device.type != "cuda":
        yield
        return
    index = device.index if device.index is not None else 0
    smi = subprocess.Popen(
        [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            "50",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    finally:
        smi.terminate()
        out, _ = smi.communicate()
        samples = [float(x) for x in out.split() if x.strip().isdigit()]
        into.append(statistics.fmean(samples) if samples else float("nan"))


def engine_variant(exp: Experiment, batched: bool, precision: str) -> FederatedRun:
    cfg = exp.config.model_copy(
        update={
            "federation": exp.config.federation.model_copy(
                update={"batch_clients": batched}
            ),
            "model": exp.config.model.model_copy(update={"precision": precision}),
        }
    )
    return FederatedRun(dataclasses.replace(exp, config=cfg))


def selected(exp: Experiment, rnd: int) -> list[int]:
    """Round ``rnd``'s clients, as every engine variant draws them."""
    return FederatedRun(exp).loop.select(rnd)


def plain_loop(exp: Experiment, rnd: int, params: dict[str, np.ndarray]) -> float:
    """Seconds of a framework-free sequential loop over the round's clients."""
    cfg, c = exp.config, exp.config.client
    model = exp.new_adapter()
    clients = selected(exp, rnd)
    started = time.perf_counter()
    for k in clients:
        model.load_trainable_state(params)
        opt = torch.optim.AdamW(
            [
                {"params": model.body_parameters(), "lr": c.lr},
                {"params": model.head_parameters(), "lr": c.head_lr},
            ],
            weight_decay=c.weight_decay,
        )
        data = exp.clients[k].train
        rng = stream(cfg.seed, "client", rnd, k)
        for order in batch_orders(len(data), c.batch_size, c.local_epochs, 0, rng):
            batch = data.batch(order, model.device)
            loss = F.cross_entropy(model(batch), batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        model.trainable_state()  # the payload leaves, as in the engines
    return time.perf_counter() - started


def backbone_seconds(exp: Experiment, rnd: int, precision: str) -> float:
    """Forward+backward time alone over the batched engine's length buckets."""
    cfg, c = exp.config, exp.config.client
    model = exp.new_adapter()
    clients = selected(exp, rnd)
    orders = [
        list(
            batch_orders(
                len(exp.clients[k].train),
                c.batch_size,
                c.local_epochs,
                0,
                stream(cfg.seed, "client", rnd, k),
            )
        )
        for k in clients
    ]
    state = model.trainable_state()
    stacked = {
        n: torch.from_numpy(np.stack([v] * len(clients)))
        .to(model.device)
        .requires_grad_(True)
        for n, v in state.items()
    }
    total = 0.0
    for t in range(max(len(o) for o in orders)):
        active = [i for i in range(len(clients)) if t < len(orders[i])]
        parts = [exp.clients[clients[i]].train.batch(orders[i][t]) for i in active]
        batch = concat_batches(parts).to(model.device)
        owner = torch.repeat_interleave(
            torch.tensor(active), torch.tensor([len(p) for p in parts])
        ).to(model.device)
        lengths = batch.attention_mask.sum(dim=1)
        for idx in length_buckets(lengths, cfg.federation.bucket_size):
            sub = sub_batch(batch, idx)
            sync(model.device)
            started = time.perf_counter()
            params = {n: v[owner[idx]] for n, v in stacked.items()}
            with autocast(precision, model.device):
                logits = model.per_example_logits(sub, params)
            loss = F.cross_entropy(logits.float(), sub.labels)
            torch.autograd.grad(loss, list(stacked.values()))
            sync(model.device)
            total += time.perf_counter() - started
    return total


def speed(repeats: int, device: str = "cpu") -> dict[str, Any]:
    cfg = load_config(None, [*WORKLOAD, f"model.device={device}"])
    exp = build_experiment(cfg)
    on = exp.backbone.device
    variants = {
        "sequential fp32": engine_variant(exp, False, "fp32"),
        "batched fp32": engine_variant(exp, True, "fp32"),
        "sequential bf16": engine_variant(exp, False, "bf16"),
        "batched bf16": engine_variant(exp, True, "bf16"),
    }
    params = next(iter(variants.values())).model.trainable_state()
    seconds: dict[str, list[float]] = {
        name: []
        for name in ["plain loop fp32", *variants, "backbone fp32", "backbone bf16"]
    }
    utilisation: dict[str, list[float]] = {name: [] for name in seconds}
    examples = 0.0
    for rnd in range(1, repeats + 2):  # round 1 warms up (FLOP counting, caches)
        with gpu_utilisation(on, utilisation["plain loop fp32"]):
            seconds["plain loop fp32"].append(plain_loop(exp, rnd, params))
        for name, run in variants.items():
            with gpu_utilisation(on, utilisation[name]):
                _, record = run.run_round(rnd, params)
            seconds[name].append(record["train_seconds"])
            examples = record["train_examples_total"]
        seconds["backbone fp32"].append(backbone_seconds(exp, rnd, "fp32"))
        seconds["backbone bf16"].append(backbone_seconds(exp, rnd, "bf16"))
        print(
            f"  round {rnd}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in seconds.items()),
            flush=True,
        )
    median = {k: statistics.median(v[1:]) for k, v in seconds.items()}
    out = {
        "device": describe_device(on),
        "examples_per_round": examples,
        "clients_per_round": len(selected(exp, 1)),
        "median_seconds": median,
        "examples_per_second": {k: examples / v for k, v in median.items()},
        "all_seconds": seconds,
    }
    if on.type == "cuda":
        out["gpu_utilisation_percent"] = {
            k: statistics.median(v[1:]) for k, v in utilisation.items() if v
        }
        out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated(on) / 2**20
    return out


def per_method(repeats: int, methods: list[str]) -> dict[str, dict[str, float]]:
    """Median round seconds of the four engine variants for other PEFT methods
    (same workload; each method's variants interleaved round by round)."""
    out = {}
    for method in methods:
        exp = build_experiment(load_config(None, [*WORKLOAD, f"peft.method={method}"]))
        variants = {
            f"{mode} {p}": engine_variant(exp, mode == "batched", p)
            for p in ("fp32", "bf16")
            for mode in ("sequential", "batched")
        }
        params = next(iter(variants.values())).model.trainable_state()
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for rnd in range(1, repeats + 2):  # round 1 warms up
            for name, run in variants.items():
                seconds[name].append(run.run_round(rnd, params)[1]["train_seconds"])
        out[method] = {k: statistics.median(v[1:]) for k, v in seconds.items()}
        print(f"  {method}: {out[method]}", flush=True)
    return out


def accuracy() -> dict[str, Any]:
    """Final accuracy of the default main job: sequential fp32 vs batched bf16."""
    from fedpeft.engine.runner import run_experiment

    out = {}
    for name, extra in {
        "sequential fp32": ["model.precision=fp32"],
        "batched bf16": ["model.precision=bf16", "federation.batch_clients=true"],
    }.items():
        cfg = load_config(
            None,
            [
                *extra,
                "baselines.run=[]",
                "output_dir=runs/engine-speed",
                f"name={name.replace(' ', '-')}",
            ],
        )
        started = time.perf_counter()
        summary = run_experiment(cfg, overwrite=True)
        out[name] = {
            "final_accuracy": summary["federated"]["final_accuracy"],
            "final_macro_f1": summary["federated"]["final_macro_f1"],
            "seconds": time.perf_counter() - started,
        }
        print(f"  {name}: {out[name]}", flush=True)
    return out


def record_dp(repeats: int) -> dict[str, float]:
    """Median round seconds under record-level DP-SGD, interleaved."""
    dp = "privacy.record_dp={noise_multiplier=1.0, clip_norm=1.0}"
    exp = build_experiment(load_config(None, [*WORKLOAD, dp]))
    variants = {
        "sequential fp32": engine_variant(exp, False, "fp32"),
        "batched fp32": engine_variant(exp, True, "fp32"),
        "batched bf16": engine_variant(exp, True, "bf16"),
    }
    params = next(iter(variants.values())).model.trainable_state()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rnd in range(1, repeats + 2):  # round 1 warms up
        for name, run in variants.items():
            seconds[name].append(run.run_round(rnd, params)[1]["train_seconds"])
        print(f"  record-dp round {rnd}: {[v[-1] for v in seconds.values()]}")
    return {k: statistics.median(v[1:]) for k, v in seconds.items()}


def local_only(repeats: int) -> dict[str, Any]:
    """Seconds and results of the main job's local-only baseline, batched vs
    one client after another (interleaved; medians)."""
    from fedpeft.baselines.local_only import run_local_only

    exp = build_experiment(load_config(None, ["baselines.run=[]"]))
    variants = {}
    for batched in (False, True):
        cfg = exp.config.model_copy(
            update={
                "federation": exp.config.federation.model_copy(
                    update={"batch_clients": batched}
                )
            }
        )
        variants["batched" if batched else "sequential"] = dataclasses.replace(
            exp, config=cfg
        )
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    results: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for name, variant in variants.items():
            started = time.perf_counter()
            results[name] = run_local_only(variant)
            seconds[name].append(time.perf_counter() - started)
            print(f"  local-only {name}: {seconds[name][-1]:.1f} s", flush=True)
    return {
        "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
        "all_seconds": seconds,
        "results": results,
    }


MEMORY_CODE = """
import json, sys, threading, time
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment
from fedpeft.engine.simulation import FederatedRun
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20
peak = 0.0
done = threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, rss())
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
n, per_round = int(sys.argv[1]), int(sys.argv[2])
cfg = load_config(None, [
    "data.corpus=rotten-tomatoes", "data.max_train=8000", "data.max_test=100",
    "model.max_length=64", f"federation.num_clients={n}",
    f"strategy.fraction_fit={per_round / n}", "federation.rounds=2",
    "federation.eval_every=1000", "federation.batch_clients=true",
    "partition.method=iid", "partition.min_size=4", "partition.val_fraction=0",
    "peft.head_init=zeros", "baselines.run=[]", "model.precision=bf16",
])
exp = build_experiment(cfg)
loaded = rss()
run = FederatedRun(exp)
params = run.model.trainable_state()
for rnd in (1, 2):
    params, record = run.run_round(rnd, params)
done.set()
print(json.dumps({"clients": n, "per_round": per_round, "rss_after_load_mib": loaded,
                  "peak_rss_mib": max(peak, rss())}))
"""


def memory() -> list[dict[str, Any]]:
    rows = []
    for n, per_round in [(10, 10), (100, 10), (1000, 10), (1000, 100)]:
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CODE, str(n), str(per_round)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  memory {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--local-only", action="store_true")
    parser.add_argument("--record-dp", action="store_true")
    parser.add_argument(
        "--methods", nargs="*", default=[], help="also time these PEFT methods"
    )
    parser.add_argument(
        "--device", default="cpu", help="model.device of the speed comparison"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.no_speed:
        key = "speed" if args.device == "cpu" else "speed cuda"
        stored[key] = speed(args.repeats, args.device)
    if args.methods:
        stored["methods"] = {  # a run of some methods updates their entries
            **stored.get("methods", {}),
            **per_method(args.repeats, args.methods),
        }
    if args.record_dp:
        stored["record_dp"] = record_dp(args.repeats)
    if args.local_only:
        stored["local_only"] = local_only(args.repeats)
    if args.accuracy:
        stored["accuracy"] = accuracy()
    if args.memory:
        stored["memory"] = memory()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2))
    print(render(stored))


def render(stored: dict[str, Any]) -> str:
    lines = []
    for key in ("speed", "speed cuda"):
        if key not in stored:
            continue
        s = stored[key]
        med, eps = s["median_seconds"], s["examples_per_second"]
        gpu = s.get("gpu_utilisation_percent", {})
        base = med["sequential fp32"]
        lines += [
            f"{s.get('device', 'cpu')}: {s['clients_per_round']} clients/round, "
            f"{s['examples_per_round']:.0f} training examples/round",
            "",
            "| variant | s / round (median) | training ex/s | vs sequential fp32 |"
            + (" GPU utilisation |" if gpu else ""),
            "|---|---|---|---|" + ("---|" if gpu else ""),
        ]
        for k in med:
            row = f"| {k} | {med[k]:.2f} | {eps[k]:.1f} | {base / med[k]:.2f}× |"
            if gpu:
                row += f" {gpu[k]:.0f}% |" if k in gpu else " |"
            lines.append(row)
        for p in ("fp32", "bf16"):
            share = med[f"backbone {p}"] / med[f"batched {p}"]
            lines.append(f"\nbackbone share of the batched {p} round: {share:.0%}")
        if "gpu_peak_allocated_mib" in s:
            lines.append(
                f"peak GPU memory allocated: {s['gpu_peak_allocated_mib']:.0f} MiB"
            )
    if "methods" in stored:
        lines += [
            "",
            "| method | "
            + " | ".join(next(iter(stored["methods"].values())))
            + " | batched bf16 vs sequential fp32 |",
            "|---|---|---|---|---|---|",
        ]
        for method, med in stored["methods"].items():
            ratio = med["sequential fp32"] / med["batched bf16"]
            cells = " | ".join(f"{v:.2f} s" for v in med.values())
            lines.append(f"| {method} | {cells} | {ratio:.2f}× |")
    if "record_dp" in stored:
        med = stored["record_dp"]
        base = med["sequential fp32"]
        lines += ["", "| record-level DP-SGD | s / round | vs sequential fp32 |"]
        lines.append("|---|---|---|")
        for k, v in med.items():
            lines.append(f"| {k} | {v:.2f} | {base / v:.2f}× |")
    if "local_only" in stored:
        lo = stored["local_only"]
        med, res = lo["median_seconds"], lo["results"]
        lines += [
            "",
            "| local-only baseline | s (median) | test accuracy (mean, min, max) |",
            "|---|---|---|",
        ]
        for k in med:
            r = res[k]
            lines.append(
                f"| {k} | {med[k]:.1f} | {r['test_accuracy']:.4f}, "
                f"{r['test_accuracy_min']:.4f}, {r['test_accuracy_max']:.4f} |"
            )
        ratio = med["sequential"] / med["batched"]
        lines.append(f"\nbatched vs sequential: {ratio:.2f}×")
    if "accuracy" in stored:
        lines.append("")
        for k, v in stored["accuracy"].items():
            lines.append(
                f"main job {k}: accuracy {v['final_accuracy']:.4f}, macro-F1 "
                f"{v['final_macro_f1']:.4f}, {v['seconds']:.0f} s"
            )
    if "memory" in stored:
        lines += [
            "",
            "| clients | per round | RSS after load | peak RSS |",
            "|---|---|---|---|",
        ]
        for r in stored["memory"]:
            lines.append(
                f"| {r['clients']} | {r['per_round']} | "
                f"{r['rss_after_load_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
