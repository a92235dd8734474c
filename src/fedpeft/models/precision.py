"""Backbone compute precision: fp32, or bf16 autocast with fp32 adapters.

``"auto"`` (the default of ``model.precision`` and ``model.eval_precision``)
is bf16 where the device multiplies bf16 matrices in hardware and fp32
elsewhere. On a CPU without bf16 instructions (AVX2 only: AMD Zen 1–3, Intel
before Cooper Lake) torch emulates bf16 matmuls at 1/40–1/70 of the fp32 rate
and a training step of the main job takes 19× as long as in fp32
(docs/benchmarks.md, "Machines without bf16"), so a bf16 default there would
turn a 16-minute run into hours.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX).

    Read from torch's own CPU feature probe (``torch.cpu``'s private
    ``_is_avx512_bf16_supported`` / ``_is_amx_tile_supported``); a torch
    without them falls back to oneDNN's bf16 check, which also accepts plain
    AVX512 (emulated bf16, but at a usable rate there)."""
    probes = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if all(p is None for p in probes):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(bool(p()) for p in probes if p is not None)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (a CUDA GPU
    from Ampere on, or a CPU with :func:`cpu_native_bf16`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return device.type == "cpu" and cpu_native_bf16()


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: the precision a setting means on ``device``.

    ``"auto"`` is bf16 where :func:`native_bf16`, else fp32. An explicit
    ``"bf16"`` is kept where the hardware lacks it, with a warning (once per
    process and device type), since results are right but slow.

    Raises:
        ValueError: for a setting other than ``"auto"``, ``"fp32"``, ``"bf16"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r}: choose 'auto' (bf16 where the hardware "
            "has it), 'fp32' or 'bf16'"
        )
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        _warn_emulated(torch.device(device).type)
    return precision


@functools.cache
def _warn_emulated(device_type: str) -> None:
    warnings.warn(
        f"precision 'bf16' on a {device_type} without bf16 matrix instructions: "
        "torch emulates the bf16 matmuls, many times slower than fp32 (a training "
        "step 19x on an AVX2 CPU). Set model.precision and model.eval_precision "
        "to 'auto' (bf16 only where the hardware has it) or 'fp32'",
        RuntimeWarning,
        stacklevel=3,
    )


def autocast(
    precision: str, device: torch.device | str
) -> contextlib.AbstractContextManager[object]:
    """Context that runs the matmuls of ``device`` in bf16 when asked.

    Autocast is per device type: it must name the device the backbone computes
    on (autocast for CUDA leaves CPU operations in fp32, which once made
    ``"bf16"`` silently fp32 on machines with a GPU).

    Args:
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:func:`resolve_precision`).

    Raises:
        ValueError: for another precision.
    """
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
