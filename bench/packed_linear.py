"""The frozen bf16 body on CPU: packed linear weights, the inference attention
kernel and glibc's allocator, one at a time (docs/benchmarks.md, "The main
job by phase").

Medians of ``--repeats`` interleaved repetitions (the first a warm-up), in one
process, 2 threads:

* linear layers alone, the main job's shapes (16 × 64 tokens: 384 → 384,
  384 → 1,536, 1,536 → 384), ``nn.Linear`` against
  :class:`~fedpeft.models.packed.PackedLinear`, forward and forward + the input
  gradient;
* the main job's soft prompt on MiniLM-L6's bf16 body: a training step
  (batch 16, forward, backward, AdamW) and an evaluation step (128 test
  sequences), with the body's linear layers plain or packed, and forward-only
  attention on fp32 up-casts (until 2026-12-05) or torch's bf16 kernel (now).

glibc's setting is per process and cannot be undone, so it is a flag: run
the script twice, with and without ``--retain`` (the run's default), for its
effect.

    python bench/packed_linear.py [--retain] [--repeats 9] [--label L]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from results_io import merge_results
from timing import interleaved_medians  # bench/timing.py
from torch import nn

import fedpeft.models.attention as attention
from fedpeft.client.steps import build_optimizer
from fedpeft.config import load_config
from fedpeft.engine.host import retain_freed_memory
from fedpeft.experiment import build_experiment
from fedpeft.models.packed import PackedLinear
from fedpeft.models.precision import autocast

RESULTS = Path("bench/results/packed_linear.json")
SHAPES = ((384, 384), (384, 1536), (1536, 384))
ROWS = 16 * 64


def _ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    return {k: s * 1e3 for k, s in interleaved_medians(fns, repeats).items()}


def layers(repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    fns: dict[str, Callable[[], Any]] = {}
    for n_in, n_out in SHAPES:
        plain = nn.Linear(n_in, n_out).to(torch.bfloat16).requires_grad_(False)
        packed = PackedLinear(plain)
        x = torch.randn(ROWS, n_in, generator=gen).to(torch.bfloat16)
        g = torch.randn(ROWS, n_out, generator=gen).to(torch.bfloat16)
        for name, layer in (("nn.Linear", plain), ("packed", packed)):

            def forward(layer: nn.Module = layer, x: torch.Tensor = x) -> Any:
                with torch.no_grad():
                    return layer(x)

            def train(
                layer: nn.Module = layer, x: torch.Tensor = x, g: torch.Tensor = g
            ) -> None:
                leaf = x.detach().requires_grad_(True)
                layer(leaf).backward(g)

            fns[f"{n_in}→{n_out} forward, {name}"] = forward
            fns[f"{n_in}→{n_out} forward + input grad, {name}"] = train
    return _ms(fns, repeats)


NATIVE = attention.sdpa_attention_forward  # transformers' SDPA function


def _upcast_inference(module: Any, q: Any, k: Any, v: Any, mask: Any, **kw: Any) -> Any:
    """The forward-only route before 2026-12-05: fp32 flash on up-casts."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return NATIVE(module, q, k, v, mask, **kw)
    with torch.autocast("cpu", enabled=False):
        out, weights = NATIVE(module, q.float(), k.float(), v.float(), mask, **kw)
    return out.to(q.dtype), weights


def steps(repeats: int) -> dict[str, float]:
    cfg = load_config(None, ["baselines.run=[]"])
    exp = build_experiment(cfg)
    model = exp.new_adapter()
    backbone = model.backbone
    packed_body = backbone.bf16_body
    plain_body = copy.deepcopy(packed_body)
    for parent in list(plain_body.modules()):  # the same weights, unpacked
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                linear = nn.Linear(child.in_features, child.out_features, bias=False)
                linear.weight, linear.bias = child.weight, child.bias
                setattr(parent, name, linear)
    rng = np.random.default_rng(0)
    batch = exp.train.batch(rng.choice(len(exp.train), 16, replace=False), model.device)
    test = exp.test.batch(np.arange(min(128, len(exp.test))), model.device)
    optimizer = build_optimizer(model, cfg.client)
    native = NATIVE

    def use(body: Any, forward_attention: Callable[..., Any]) -> None:
        backbone.__dict__["bf16_body"] = body
        attention.sdpa_attention_forward = forward_attention

    def train(body: Any) -> Callable[[], None]:
        def step() -> None:
            use(body, native)
            with autocast("bf16", model.device):
                logits = model(batch)
            loss = F.cross_entropy(logits.float(), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        return step

    def infer(body: Any, forward_attention: Callable[..., Any]) -> Callable[[], None]:
        def step() -> None:
            use(body, forward_attention)
            with torch.inference_mode(), autocast("bf16", model.device):
                model(test)

        return step

    try:
        return _ms(
            {
                "train step (16), plain linear": train(plain_body),
                "train step (16), packed linear": train(packed_body),
                "eval step (128), plain linear, fp32 flash on up-casts": infer(
                    plain_body, _upcast_inference
                ),
                "eval step (128), plain linear, bf16 flash": infer(plain_body, native),
                "eval step (128), packed linear, fp32 flash on up-casts": infer(
                    packed_body, _upcast_inference
                ),
                "eval step (128), packed linear, bf16 flash": infer(
                    packed_body, native
                ),
            },
            repeats,
        )
    finally:
        use(packed_body, native)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--retain", action="store_true", help="retain_freed_memory")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--label", default="2026-12-05")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.retain:
        retain_freed_memory()
    allocator = "retained" if args.retain else "glibc default"
    results = {"layers": layers(args.repeats), "steps": steps(args.repeats)}
    for section, times in results.items():
        print(f"| {section} ({allocator}) | ms |\n|---|---|")
        for name, ms in times.items():
            print(f"| {name} | {ms:.2f} |")
    merge_results(RESULTS, {f"{args.label}, {allocator}": results})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
