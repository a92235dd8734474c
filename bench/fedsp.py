"""Soft prompts as messengers (FedSP): sizes, distillation and accuracy.

``--sizes``: parameters and bytes of the auxiliary model against the full
model, per recipe, on SmolLM2-135M and MiniLM-L6 (embeddings counted).

``--distill``: builds (or finds in the cache) the auxiliary models the
comparison uses and prints their held-out hidden-state error before and
after distillation and the time per step.

``--memory``: peak resident memory, FLOPs and time of one client training
step (16 sequences, bf16) on the full model and on each auxiliary model, each
in a fresh process holding only that model.

``--compare``: few-shot Rotten Tomatoes on SmolLM2-135M (200 training
examples over 4 IID clients, all of them every round, 300 test examples;
prefix tuning, 16 positions, verbalizer head), per seed and arm:
prefix tuning on the full model (federated), FedSP (clients on the shared-
layer auxiliary model, prompts served on the full model), FedSP without
distillation, depth reduction alone (10 of 30 layers, no sharing). Each
FedSP run also scores the prompt on the auxiliary model itself. Round 0 is
the zero-shot verbalizer behind the initial prefix; the zero-shot verbalizer
without any prefix is printed once. Cells cached in runs/fedsp_compare/.

    python bench/fedsp.py --sizes
    python bench/fedsp.py --distill
    python bench/fedsp.py --memory
    python bench/fedsp.py --compare [--seeds 0 1 2] [--arms ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from results_io import merge_results, write_json  # bench/results_io.py

from fedpeft.client.evaluate import evaluate_many
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.fedsp.auxiliary import build_auxiliary, layer_plan, model_size
from fedpeft.fedsp.recipe import auxiliary_for
from fedpeft.models.loading import load_backbone
from fedpeft.peft.base import AdapterClassifier

RESULTS = Path("bench/results/fedsp.json")
CACHE = Path("runs/fedsp_compare")
BASE = [
    "model.backbone=smollm2-135m",
    "model.max_length=64",
    "model.precision=bf16",
    "data.corpus=rotten-tomatoes",
    "data.max_train=200",
    "data.max_test=300",
    "federation.eval_every=3",
    "federation.eval_clients=false",
    "federation.num_clients=4",
    "strategy.fraction_fit=1.0",
    "partition.method=iid",
    "peft.method=prefix",
    "peft.prefix_length=16",
    "peft.head_init=random",
    "baselines.run=[]",
    "fedsp.distill_steps=400",
]
ARMS = {
    "full model": [],
    "fedsp": ["fedsp.enabled=true"],
    "fedsp, no distillation": ["fedsp.enabled=true", "fedsp.distill=false"],
    "depth 10, no sharing": [
        "fedsp.enabled=true",
        "fedsp.depth=10",
        "fedsp.share=false",
    ],
    # FedSP's whole protocol: the server holds client 3's shard and tunes the
    # prompt on the full model each round; clients alternate a model stage
    "fedsp + server step": ["fedsp.enabled=true", "fedsp.server_steps=3"],
    "fedsp + model stage": ["fedsp.enabled=true", "fedsp.model_steps=3"],
}


def sizes() -> dict[str, Any]:
    """Auxiliary/full size per recipe (no distillation needed for sizes)."""
    out: dict[str, Any] = {}
    for name in ("smollm2-135m", "minilm-l6"):
        full = load_backbone(name)
        layers = full.num_layers
        recipes = {
            "share (FedSP)": layer_plan(layers),
            f"depth {layers // 3}": layer_plan(layers, layers // 3, share=False),
            f"depth {layers // 3} + share": layer_plan(layers, layers // 3),
        }
        full_size = model_size(full.model)
        out[name] = {"full": asdict(full_size)}
        for label, plan in recipes.items():
            aux = model_size(build_auxiliary(full, plan).model)
            out[name][label] = {
                **asdict(aux),
                "ratio": full_size.parameters / aux.parameters,
                "ratio_without_embeddings": (full_size.parameters - full_size.embedding)
                / (aux.parameters - aux.embedding),
                "layers_run": plan.depth,
            }
            print(name, label, json.dumps(out[name][label]), flush=True)
    return out


def distill_all() -> dict[str, Any]:
    """Build the comparison's auxiliary models; their errors and timing."""
    out: dict[str, Any] = {}
    for arm, extra in ARMS.items():
        if not extra:
            continue
        cfg = load_config(None, [*BASE, *extra])
        backbone = load_backbone(cfg.model.backbone)
        started = time.perf_counter()
        aux = auxiliary_for(cfg, backbone, _progress(cfg.fedsp.distill_steps))
        meta = aux.meta
        out[arm] = {
            "heldout_error_before": meta.get("heldout_error_before"),
            "heldout_error_after": meta.get("heldout_error_after"),
            "shipped_bytes": aux.shipped_bytes,
            "seconds": time.perf_counter() - started,
            "distill_steps": cfg.fedsp.distill_steps if cfg.fedsp.distill else 0,
        }
        print(arm, json.dumps(out[arm]), flush=True)
    return out


def _progress(total: int) -> Any:
    def show(step: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            print(f"  distill {step}/{total}: loss {loss:.3f}", flush=True)

    return show


MEMORY_PROBE = r"""
import re, sys, time, numpy as np, torch
from fedpeft.client.flops import FlopMeter
from fedpeft.models.loading import load_backbone
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import tokenize
from fedpeft.peft.prefix.model import PrefixClassifier
def hwm():  # peak resident KiB of this process image (ru_maxrss survives exec)
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
base = hwm()
model = load_backbone(sys.argv[1])
loaded = hwm()
adapter = PrefixClassifier(model, 2, generator=torch.Generator().manual_seed(0),
                           prefix_length=16, label_names=("rotten", "fresh"))
texts = ["a quietly moving film about grief and the people left behind"] * 16
data = tokenize(model, texts, np.zeros(16, dtype=np.int64), 64)
opt = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
meter = FlopMeter()
started = time.perf_counter()
for _ in range(3):
    batch = data.batch(np.arange(16))
    def step():
        with autocast("bf16", "cpu"):
            loss = torch.nn.functional.cross_entropy(adapter(batch), batch.labels)
        opt.zero_grad(); loss.backward(); opt.step()
    meter.run(("train", batch.input_ids.shape[1]), step, count=16)
seconds = (time.perf_counter() - started) / 3
peak = hwm()
mib = [(loaded - base) / 2**10, (peak - base) / 2**10]
print(*mib, meter.total / 3, seconds)
"""


def memory() -> dict[str, Any]:
    """Peak resident memory and FLOPs of a client's prefix-training step
    (16 sequences, bf16) on the full model and on each auxiliary model, each
    in a fresh process that loads only that model."""
    import subprocess
    import sys

    targets = {"full model": "smollm2-135m"}
    for arm, extra in ARMS.items():
        if extra and "fedsp.distill=false" not in extra:
            cfg = load_config(None, [*BASE, *extra])
            aux = auxiliary_for(cfg, load_backbone(cfg.model.backbone))
            targets[arm] = str(aux.directory)
    out: dict[str, Any] = {}
    for arm, target in targets.items():
        line = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, target],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        out[arm] = dict(
            zip(
                ("model_mib", "peak_mib", "flops_per_step", "seconds_per_step"),
                map(float, line),
                strict=True,
            )
        )
        print(arm, json.dumps(out[arm]), flush=True)
    return out


ENCODER = {
    # MiniLM-L6 has no LM head: the class-means warm start gives the head,
    # from the features each client can compute (the auxiliary model's, under
    # FedSP); depth reduction keeps 2 of its 6 layers
    "model.backbone": "minilm-l6",
    "peft.head_init": "class-means",
    "fedsp.depth": "2",
}


def settings(arm: str, backbone: str) -> list[str]:
    """The arm's overrides on ``BASE`` for ``backbone``."""
    items = [*BASE, *ARMS[arm]]
    if backbone == "smollm2-135m":
        return items
    if backbone != "minilm-l6":
        raise ValueError(f"--backbone {backbone}: smollm2-135m or minilm-l6")
    keys = {item.split("=", 1)[0] for item in items}
    return [
        f"{k}={ENCODER[k]}" if (k := item.split("=", 1)[0]) in ENCODER else item
        for item in items
    ] + [f"{k}={v}" for k, v in ENCODER.items() if k not in keys and k != "fedsp.depth"]


def cell(
    arm: str, seed: int, rounds: int, fresh: bool, backbone: str = "smollm2-135m"
) -> dict[str, Any]:
    """One seeded federated run of ``arm``, cached."""
    key = f"{arm.replace(' ', '_').replace(',', '')}-seed{seed}-r{rounds}"
    if backbone != "smollm2-135m":
        key = f"{backbone}-{key}"
    path = CACHE / f"{key}.json"
    if path.exists() and not fresh:
        return dict(json.loads(path.read_text()))
    cfg = load_config(
        None,
        [*settings(arm, backbone), f"seed={seed}", f"federation.rounds={rounds}"],
    )
    run = FederatedRun(build_experiment(cfg))
    started = time.perf_counter()
    result = run.run()
    history = result.history
    out = {
        "arm": arm,
        "seed": seed,
        "accuracy": [r["test_accuracy"] for r in history if "test_accuracy" in r],
        "auxiliary_accuracy": [
            r["auxiliary_test_accuracy"]
            for r in history
            if "auxiliary_test_accuracy" in r
        ],
        "bytes_up_per_client": history[-1].get("bytes_up_per_client"),
        "bytes_down_per_client": history[-1].get("bytes_down_per_client"),
        "model_bytes_down_per_client": (history[0].get("model_bytes_down") or 0) / 4,
        "client_flops_per_round": statistics.mean(
            r.get("client_flops_total", 0.0) / len(r["clients"]) for r in history[1:]
        ),
        "client_seconds_per_round": statistics.mean(
            r.get("train_seconds", 0.0) / len(r["clients"]) for r in history[1:]
        ),
        "seconds": time.perf_counter() - started,
    }
    write_json(path, out)
    print(f"  {key}: {out['accuracy']} aux {out['auxiliary_accuracy']}", flush=True)
    return out


def zero_shot() -> float:
    """The verbalizer alone (no prefix) on the comparison's test set."""
    exp = build_experiment(load_config(None, BASE))
    bare = AdapterClassifier(
        exp.backbone,
        exp.num_classes,
        torch.Generator().manual_seed(0),
        exp.corpus.label_names,
    )
    (test,) = evaluate_many(bare, [exp.test], 64, "bf16")
    return test.accuracy


def summarize(cells: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for arm in arms:
        rows = [c for c in cells if c["arm"] == arm]
        final = [c["accuracy"][-1] for c in rows]
        aux = [c["auxiliary_accuracy"][-1] for c in rows if c["auxiliary_accuracy"]]
        table[arm] = {
            "final_mean": statistics.mean(final),
            "final_sd": statistics.stdev(final) if len(final) > 1 else 0.0,
            "finals": final,
            "round0": [c["accuracy"][0] for c in rows],
            "auxiliary_finals": aux,
            "client_flops_per_round": rows[0]["client_flops_per_round"],
            "client_seconds_per_round": statistics.mean(
                c["client_seconds_per_round"] for c in rows
            ),
            "bytes_up_per_client": rows[0]["bytes_up_per_client"],
            "model_bytes_down_per_client": rows[0]["model_bytes_down_per_client"],
        }
        print(arm, json.dumps(table[arm]), flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", action="store_true")
    parser.add_argument("--distill", action="store_true")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--zero-shot", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=list(ARMS)[:4])
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--backbone", default="smollm2-135m")
    args = parser.parse_args()
    stored: dict[str, Any] = {}
    if args.sizes:
        stored["sizes"] = sizes()
    if args.distill:
        stored["distill"] = distill_all()
    if args.memory:
        stored["memory"] = memory()
    if args.zero_shot:
        stored["zero_shot"] = zero_shot()
        print("zero-shot verbalizer", stored["zero_shot"])
    if args.compare:
        cells = [
            cell(arm, seed, args.rounds, args.fresh, args.backbone)
            for seed in args.seeds
            for arm in args.arms
        ]
        name = "compare" if args.backbone == "smollm2-135m" else "compare_minilm"
        stored[name] = {
            "settings": settings(args.arms[0], args.backbone),
            "rounds": args.rounds,
            "table": summarize(cells, args.arms),
        }
    merge_results(RESULTS, stored)


if __name__ == "__main__":
    main()
