"""One shared training step of 10 clients, every way it can be computed.

The batched engine's unit of work: 10 clients × one batch of 16 Rotten Tomatoes
snippets (≤ 64 tokens) with a 20-vector soft prompt, forward + backward to the
stacked prompts and heads (no optimizer). Variants:

* ``sequential``: 10 separate batches of 16, as the sequential engine runs them;
* ``one rectangle``: the 160 examples concatenated and padded to the longest;
* ``buckets of k``: sorted by length, groups of k each padded to its own
  longest (what ``federation.bucket_size = k`` does);

each in fp32, with bf16 autocast (fp32 weights cast per op, as
``model.precision = "bf16"`` runs), and with a bf16 copy of the frozen weights
(no autocast; not an engine option, measured to size that lever). Medians of
``--repeats`` interleaved repetitions (the first is a warm-up).

    python bench/shared_step.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.batched import concat_batches, length_buckets, sub_batch
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment
from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch

RESULTS = Path("bench/results/shared_step.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(
        None,
        [
            "data.max_train=3200",
            "data.max_test=100",
            "model.max_length=64",
            "federation.num_clients=40",
            "partition.method=iid",
            "partition.val_fraction=0",
            "baselines.run=[]",
        ],
    )
    exp = build_experiment(cfg)
    model = exp.new_adapter("prompt")
    bb = exp.backbone
    bf16 = Backbone(
        bb.name, copy.deepcopy(bb.model).to(torch.bfloat16), bb.tokenizer, bb.kind
    )
    model_bf16 = exp.new_adapter("prompt")
    object.__setattr__(model_bf16, "backbone", bf16)
    rng = np.random.default_rng(0)
    parts = [exp.clients[k].train.batch(rng.permutation(80)[:16]) for k in range(10)]
    big = concat_batches(parts)
    owner = torch.arange(10).repeat_interleave(16)
    state = model.trainable_state()
    stacked = {
        n: torch.from_numpy(np.stack([v] * 10)).requires_grad_(True)
        for n, v in state.items()
    }

    def layouts() -> dict[str, tuple[list[Batch], list[torch.Tensor]]]:
        out = {
            "sequential": (parts, [torch.full((16,), k) for k in range(10)]),
            "one rectangle": ([big], [owner]),
        }
        for size in (16, 32, 48):
            groups = length_buckets(big.attention_mask.sum(1), size)
            out[f"buckets of {size}"] = (
                [sub_batch(big, g) for g in groups],
                [owner[g] for g in groups],
            )
        return out

    def step(
        m: object, batches: list[Batch], owners: list[torch.Tensor], p: str
    ) -> None:
        for b, o in zip(batches, owners, strict=True):
            params = {n: v[o] for n, v in stacked.items()}
            with autocast(p, "cpu"):
                logits = m.per_example_logits(b, params)  # type: ignore[attr-defined]
            loss = F.cross_entropy(logits.float(), b.labels)
            torch.autograd.grad(loss, list(stacked.values()))

    variants = {}
    for name, (batches, owners) in layouts().items():
        variants[f"{name}, fp32"] = (model, batches, owners, "fp32")
        variants[f"{name}, bf16 autocast"] = (model, batches, owners, "bf16")
        variants[f"{name}, bf16 weights"] = (model_bf16, batches, owners, "fp32")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats + 1):
        for name, (m, batches, owners, p) in variants.items():
            started = time.perf_counter()
            step(m, batches, owners, p)
            times[name].append(time.perf_counter() - started)
    median = {k: statistics.median(v[1:]) for k, v in times.items()}
    base = median["sequential, fp32"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"median_seconds": median, "all": times}, indent=2))
    print("| layout, precision | s / shared step | vs sequential fp32 |")
    print("|---|---|---|")
    for k, v in median.items():
        print(f"| {k} | {v:.3f} | {base / v:.2f}× |")


if __name__ == "__main__":
    main()
