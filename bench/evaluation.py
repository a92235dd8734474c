"""Evaluation one data set at a time vs one length-sorted pass (``evaluate_many``).

The main job's data (Rotten Tomatoes, 10 clients, Dirichlet α = 0.5, 600 test
snippets, each client's validation split), soft prompt L = 20:

* ``global model``: the test set and every client's validation split, as the
  engine evaluates the global model each round; ``evaluate`` per set vs one
  ``evaluate_many`` call;
* ``local models``: 5 clients' own trained states on their own validation
  splits, as the batched engine checks each update; load + ``evaluate`` per
  client vs ``evaluate_many(states=...)`` (batches of 128, as the engine's
  ``eval_batch_size``, and of 32).

Both in bf16 (the default ``model.eval_precision``) and fp32; medians of
``--repeats`` interleaved repetitions (the first is a warm-up).

    python bench/evaluation.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timing import interleaved_medians  # bench/timing.py

from fedpeft.client.evaluate import evaluate, evaluate_many
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment

RESULTS = Path("bench/results/evaluation.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    exp = build_experiment(load_config(None, ["baselines.run=[]"]))
    model = exp.new_adapter()
    bs = exp.config.federation.eval_batch_size
    sets = [exp.test, *(c.val for c in exp.clients if len(c.val))]
    rng = np.random.default_rng(0)
    base = model.trainable_state()
    locals_ = [
        {
            n: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32)
            for n, v in base.items()
        }
        for _ in range(5)
    ]
    vals = [exp.clients[k].val for k in range(5)]
    print(
        f"global: {len(sets)} sets, {sum(len(d) for d in sets)} examples; "
        f"local: {len(vals)} clients, {sum(len(d) for d in vals)} examples"
    )

    def one_by_one(prec: str) -> None:
        for d in sets:
            evaluate(model, d, bs, prec)

    def together(prec: str) -> None:
        evaluate_many(model, sets, bs, prec)

    def locals_one_by_one(prec: str) -> None:
        for state, d in zip(locals_, vals, strict=True):
            model.load_trainable_state(state)
            evaluate(model, d, bs, prec)

    def locals_together(prec: str, size: int = bs) -> None:
        evaluate_many(model, vals, size, prec, states=locals_)

    fns: dict[str, Callable[[], None]] = {}
    for prec in ("bf16", "fp32"):
        fns[f"global model, one by one, {prec}"] = lambda p=prec: one_by_one(p)
        fns[f"global model, one pass, {prec}"] = lambda p=prec: together(p)
        fns[f"local models, one by one, {prec}"] = lambda p=prec: locals_one_by_one(p)
        fns[f"local models, one pass, {prec}"] = lambda p=prec: locals_together(p)
        fns[f"local models, one pass, batches of 32, {prec}"] = lambda p=prec: (
            locals_together(p, 32)
        )
    medians = interleaved_medians(fns, args.repeats)
    lines = ["| evaluation | s | one pass vs one by one |", "|---|---|---|"]
    for name, s in medians.items():
        ref = medians[
            name.replace("one pass", "one by one").replace(", batches of 32", "")
        ]
        lines.append(f"| {name} | {s:.3f} | {ref / s:.2f}× |")
    print("\n".join(lines))
    RESULTS.write_text(json.dumps(medians, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
