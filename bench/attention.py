"""bf16 attention on CPU: PyTorch's kernels vs fedpeft's.

Two measurements, each as medians of ``--repeats`` interleaved repetitions
(the first is a warm-up), reported as ratios to fp32 within one run:

* the kernel alone: forward + backward on MiniLM-shaped inputs (16
  sequences, 12 heads, head dim 32): ``scaled_dot_product_attention`` in
  fp32, in bf16, in bf16 with the math backend, on bf16 inputs up-cast to
  fp32 (fedpeft's path until 2026-12-05), and fedpeft's
  :func:`~fedpeft.models.attention.bf16_attention` (three bf16 kernels);
* the whole backbone: MiniLM-L6 forward (inference) and forward + backward to
  the input embeddings (training a soft prompt), 16 sequences, in fp32, under
  bf16 autocast with transformers' SDPA attention (bf16 kernel), with the
  fp32 flash kernel on up-cast inputs, and with ``fedpeft_sdpa`` (what
  ``load_backbone`` installs).

    python bench/attention.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from results_io import merge_results
from timing import interleaved_medians  # bench/timing.py
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from fedpeft.models.attention import bf16_attention, sdpa_upcast
from fedpeft.models.loading import load_backbone

# No "flash" in the name: transformers would look for a hub kernel of that name.
UPCAST = "fedpeft_sdpa_upcast"


AttentionInterface.register(UPCAST, sdpa_upcast)  # fedpeft_sdpa until 2026-12-05
AttentionMaskInterface.register(UPCAST, sdpa_mask)

RESULTS = Path("bench/results/attention.json")
LENGTHS = (40, 84)  # a short batch; 64 tokens + a 20-vector prompt


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    return {k: s * 1e3 for k, s in interleaved_medians(fns, repeats).items()}


def kernel(length: int, repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(16, 12, length, 32, generator=gen) for _ in range(3)]

    def run(dtype: torch.dtype, kind: str | SDPBackend) -> Callable[[], None]:
        qkv = [t.to(dtype).requires_grad_(True) for t in base]

        def step() -> None:
            if kind == "fedpeft":
                out = bf16_attention(*qkv, None)
            elif kind == "upcast":
                out = F.scaled_dot_product_attention(*(t.float() for t in qkv))
            elif kind == "sdpa":
                out = F.scaled_dot_product_attention(*qkv)
            else:
                with sdpa_kernel(kind):
                    out = F.scaled_dot_product_attention(*qkv)
            out.float().sum().backward()

        return step

    return _median_ms(
        {
            "fp32": run(torch.float32, "sdpa"),
            "bf16": run(torch.bfloat16, "sdpa"),
            "bf16 math": run(torch.bfloat16, SDPBackend.MATH),
            "bf16 up-cast to fp32 flash": run(torch.bfloat16, "upcast"),
            "bf16, fedpeft bf16_attention": run(torch.bfloat16, "fedpeft"),
        },
        repeats,
    )


def backbone(length: int, repeats: int) -> dict[str, float]:
    fast = load_backbone("minilm-l6").model
    plain = copy.deepcopy(fast)
    plain.set_attn_implementation("sdpa")
    upcast = copy.deepcopy(fast)
    upcast.set_attn_implementation(UPCAST)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (16, length), generator=gen)
    mask = torch.ones(16, length, dtype=torch.long)
    mask[::2, length * 3 // 4 :] = 0  # half the rows padded

    def run(model: torch.nn.Module, bf16: bool, train: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.inference_mode(not train):
                embeds = model.embeddings.word_embeddings(ids).detach()
                embeds.requires_grad_(train)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(inputs_embeds=embeds, attention_mask=mask)
                if train:
                    out.last_hidden_state.float().sum().backward()

        return step

    out: dict[str, float] = {}
    for train in (False, True):
        mode = "train" if train else "infer"
        times = _median_ms(
            {
                "fp32": run(fast, False, train),  # fp32: both paths are plain SDPA
                "bf16, SDPA": run(plain, True, train),
                "bf16, fp32 flash on up-casts": run(upcast, True, train),
                "bf16, fedpeft_sdpa": run(fast, True, train),
            },
            repeats,
        )
        out.update({f"{mode}: {name}": ms for name, ms in times.items()})
    return out


def render(results: dict[str, dict[str, float]]) -> str:
    lines = ["| measurement | ms | vs fp32 |", "|---|---|---|"]
    for section, times in results.items():
        for name, ms in times.items():
            ref = times[(name.split(": ")[0] + ": fp32") if ": " in name else "fp32"]
            lines.append(f"| {section}, {name} | {ms:.1f} | {ref / ms:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--label", default="2026-12-05", help="key of this run in the results file"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    results: dict[str, dict[str, float]] = {}
    for length in LENGTHS:
        results[f"kernel, {length} tokens"] = kernel(length, args.repeats)
        results[f"MiniLM, {length} tokens"] = backbone(length, args.repeats)
        print(render(results), flush=True)
    merge_results(RESULTS, {args.label: results})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
