"""How close a training step and an evaluation step come to the machine's
limit (docs/benchmarks.md, "Roofline").

The limit is measured, not looked up: the best FLOP/s of a square matmul
(n = 512, 1024, 2048; median of ``--repeats`` after a warm-up) in fp32 and in
bf16, with torch's default thread count, on ``--device``. Against it:

* a **training step** of the main job's adapter (soft prompt L = 20 on
  MiniLM-L6, 64 tokens): forward, backward and the AdamW step on a batch of
  16 sequences (one client's batch, the sequential engine) and of 80 (five
  clients' batches in one forward, as the batched engine runs the main job),
  in fp32 and under bf16 autocast;
* an **evaluation step**: inference on 128 test sequences (the engine's
  ``eval_batch_size``), fp32 and bf16.

The process keeps freed memory as a run does
(:func:`fedpeft.engine.host.retain_freed_memory`). FLOPs are counted on the
step itself by :func:`fedpeft.client.flops.counting_mode` (torch's counter
plus the CPU kernels it does not know: packed linear layers, CPU flash
attention). Matmuls and attention are counted, element-wise work is not, so
the fraction is of the matmul roofline. Each row prints seconds per step,
GFLOP per step, achieved GFLOP/s and the fraction of the same precision's
peak. On a GPU
(``--device cuda``) every timing synchronises the device.

Steps run in the precisions the device computes natively
(:func:`fedpeft.models.precision.native_bf16`): fp32 always, bf16 where the
hardware has bf16 matrix instructions. Where it has not, bf16's matmul peak is
still measured (n = 512 only: emulated bf16 runs at about 1/70 of fp32 on an
AVX2 CPU) and the bf16 steps are skipped unless ``--precisions fp32,bf16``
asks for them. Results are stored per machine (device and CPU model), so runs
on different machines sit side by side.

    python bench/roofline.py [--device cpu|cuda] [--repeats 10] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from results_io import merge_results

from fedpeft.client.flops import counting_mode
from fedpeft.client.steps import build_optimizer
from fedpeft.config import load_config
from fedpeft.engine.host import retain_freed_memory
from fedpeft.experiment import build_experiment
from fedpeft.models.device import describe_cpu, describe_device
from fedpeft.models.precision import autocast, native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def counted_flops(fn: Callable[[], object]) -> int:
    with counting_mode() as counter:  # torch's counter + the CPU kernels it misses
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """Best matmul GFLOP/s per precision and the size that reached it (bf16
    without hardware support: n = 512 and 3 repeats, it is that slow)."""
    gen = torch.Generator(device=device).manual_seed(0)
    out: dict[str, dict[str, float]] = {}
    for name, dtype in DTYPES.items():
        best = {"gflops": 0.0, "n": 0.0}
        emulated = name == "bf16" and not native_bf16(device)
        for n in (512,) if emulated else (512, 1024, 2048):
            a = torch.randn(n, n, generator=gen, device=device).to(dtype)
            b = torch.randn(n, n, generator=gen, device=device).to(dtype)
            sec = timed(lambda a=a, b=b: a @ b, 3 if emulated else repeats, device)
            gflops = 2 * n**3 / sec / 1e9
            if gflops > best["gflops"]:
                best = {"gflops": gflops, "n": float(n)}
        out[name] = best
    return out


def steps(device: str, repeats: int, precisions: list[str]) -> list[dict[str, Any]]:
    """Training and evaluation steps of the main job's adapter."""
    cfg = load_config(None, [f"model.device={device}", "baselines.run=[]"])
    exp = build_experiment(cfg)
    model = exp.new_adapter()
    rng = np.random.default_rng(0)
    rows = []
    for size in (16, 80):
        batch = exp.train.batch(
            rng.choice(len(exp.train), size, replace=False), model.device
        )
        optimizer = build_optimizer(model, cfg.client)
        for precision in precisions:

            def step(
                batch: Any = batch,
                precision: str = precision,
                optimizer: torch.optim.Optimizer = optimizer,
            ) -> None:
                with autocast(precision, model.device):
                    logits = model(batch)
                loss = F.cross_entropy(logits.float(), batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()

            rows.append(
                {
                    "step": f"train, batch {size}",
                    "precision": precision,
                    "seconds": timed(step, repeats, model.device),
                    "flops": counted_flops(step),
                }
            )
    test = exp.test.batch(np.arange(min(128, len(exp.test))), model.device)
    for precision in precisions:

        def infer(precision: str = precision) -> None:
            with torch.inference_mode(), autocast(precision, model.device):
                model(test)

        rows.append(
            {
                "step": f"evaluate, batch {len(test)}",
                "precision": precision,
                "seconds": timed(infer, repeats, model.device),
                "flops": counted_flops(infer),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--results", type=Path, default=Path("bench/results/roofline.json"))
    p.add_argument(
        "--precisions",
        help="comma-separated steps' precisions (default: fp32, and bf16 where "
        "the device has bf16 matrix instructions)",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    retain_freed_memory()  # as a run does (fedpeft.engine.host)
    precisions = (
        args.precisions.split(",")
        if args.precisions
        else ["fp32", *(["bf16"] if native_bf16(device) else [])]
    )
    machine = describe_device(device) if device.type == "cuda" else describe_cpu()

    peak = matmul_peak(device, args.repeats)
    rows = steps(args.device, args.repeats, precisions)
    print(f"{machine}, {torch.get_num_threads()} threads")
    for name, best in peak.items():
        print(f"peak {name} matmul: {best['gflops']:.1f} GFLOP/s (n = {best['n']:.0f})")
    print("| step | precision | ms | GFLOP | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        row["gflops_per_s"] = row["flops"] / row["seconds"] / 1e9
        row["fraction_of_peak"] = row["gflops_per_s"] / peak[row["precision"]]["gflops"]
        print(
            f"| {row['step']} | {row['precision']} | {row['seconds'] * 1e3:.1f} | "
            f"{row['flops'] / 1e9:.2f} | {row['gflops_per_s']:.1f} | "
            f"{row['fraction_of_peak']:.1%} |"
        )
    merge_results(
        args.results,
        {
            f"{device.type}: {machine}": {
                "device": machine,
                "native_bf16": native_bf16(device),
                "threads": torch.get_num_threads(),
                "peak": peak,
                "steps": rows,
            }
        },
    )


if __name__ == "__main__":
    main()
