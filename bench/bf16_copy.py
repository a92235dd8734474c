"""bf16 autocast alone vs the backbone's bf16 weight copy (docs/benchmarks.md,
"The main job by phase, and the roofline").

The main job's soft prompt on MiniLM-L6: one training step (forward,
backward, AdamW) on a batch of 80 sequences (five clients batched) and one
evaluation step on 128 test sequences, under bf16 autocast, with the body
:meth:`Backbone.encode` runs switched between the fp32 body (autocast casts
each weight on every call, norms and residuals stay fp32) and
:attr:`Backbone.bf16_body`. Medians of ``--repeats`` interleaved repetitions
in one process, and the largest difference of the pooled test features.

    python bench/bf16_copy.py [--repeats 5]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timing import interleaved_medians  # bench/timing.py

from fedpeft.client.steps import build_optimizer
from fedpeft.config import load_config
from fedpeft.experiment import build_experiment
from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    exp = build_experiment(load_config(None, ["baselines.run=[]"]))
    model = exp.new_adapter()
    rng = np.random.default_rng(0)
    train = exp.train.batch(rng.choice(len(exp.train), 80, replace=False), "cpu")
    test = exp.test.batch(np.arange(128), "cpu")
    optimizer = build_optimizer(model, exp.config.client)
    copy_body = Backbone.compute_body

    def autocast_only(self: Backbone) -> tuple[Any, torch.dtype]:
        return self.body, torch.float32

    def variant(use_copy: bool, training: bool) -> Any:
        def run() -> None:
            Backbone.compute_body = copy_body if use_copy else autocast_only  # type: ignore[method-assign]
            if training:
                with autocast("bf16", "cpu"):
                    logits = model(train)
                loss = F.cross_entropy(logits.float(), train.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            else:
                with torch.inference_mode(), autocast("bf16", "cpu"):
                    model(test)

        return run

    times = interleaved_medians(
        {
            "train, autocast only": variant(False, True),
            "train, bf16 copy": variant(True, True),
            "evaluate, autocast only": variant(False, False),
            "evaluate, bf16 copy": variant(True, False),
        },
        args.repeats,
    )
    features = {}
    for use_copy in (False, True):
        Backbone.compute_body = copy_body if use_copy else autocast_only  # type: ignore[method-assign]
        with torch.inference_mode(), autocast("bf16", "cpu"):
            features[use_copy] = model.features(test)
    Backbone.compute_body = copy_body  # type: ignore[method-assign]
    for name, sec in times.items():
        print(f"{name}: {sec:.3f} s")
    for step in ("train", "evaluate"):
        ratio = times[f"{step}, bf16 copy"] / times[f"{step}, autocast only"]
        print(f"{step}: copy / autocast = {ratio:.2f}")
    diff = (features[True] - features[False]).abs().max().item()
    print(f"largest pooled-feature difference: {diff:.4f}")


if __name__ == "__main__":
    main()
